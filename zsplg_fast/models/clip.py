"""open_clip models by name, weights from an open_clip tag or a local file, bundled with what callers need.

Built-in open_clip names load through ``open_clip.create_model(name, pretrained=...)`` (its own loading:
plain state_dict or ``{"state_dict": sd}``, ``module.`` prefixes, pos-embed resizing). Project models
(the toy world's ``toy``) register a builder with ``register_clip_model``; their weights load through
``open_clip.load_checkpoint``. There is no network: a tag whose weights are not cached is a
``CheckpointError``.
"""

from __future__ import annotations

import difflib
import logging
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
from torch import nn

from zsplg_fast.errors import CheckpointError, ConfigError
from zsplg_fast.models.init import deterministic_init
from zsplg_fast.models.plugins import load_plugins
from zsplg_fast.models.safe_load import refusal
from zsplg_fast.models.sam import RANDOM_INIT, weights_fingerprint
from zsplg_fast.utils.io import atomic_write_with, refuse_overwrite

log = logging.getLogger(__name__)

Tokenizer = Callable[[list[str]], torch.Tensor]
"""open_clip tokenizer: list of N strings → (N, context_length) int64 token ids."""
ClipBuilder = Callable[[], tuple[nn.Module, Tokenizer]]
"""Zero-argument builder: a randomly initialised open_clip model (eval) and its tokenizer."""

CLIP_BUILDERS: dict[str, ClipBuilder] = {}
"""Project-registered CLIP models (looked up before open_clip's built-in names)."""
CLIP_DEFAULT_WEIGHTS: dict[str, Callable[[], Path | None]] = {}
"""Registered name → its shipped weights file (used when ``pretrained`` is None)."""

_CHECKPOINT_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors", ".ckpt")


def _open_clip() -> ModuleType:
    """Import open_clip lazily (≈2 s) with the Hugging Face hub forced offline."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import open_clip

    return open_clip


def register_clip_model(
    name: str, builder: ClipBuilder, default_pretrained: Callable[[], Path | None] | None = None
) -> None:
    """Register a project CLIP model (e.g. ``toy``); ``default_pretrained`` gives its shipped weights."""
    CLIP_BUILDERS[name] = builder
    if default_pretrained is not None:
        CLIP_DEFAULT_WEIGHTS[name] = default_pretrained
    else:
        CLIP_DEFAULT_WEIGHTS.pop(name, None)


def open_clip_config_builder(config_json: str | Path) -> ClipBuilder:
    """A builder for an open_clip custom model config file (``{"embed_dim", "vision_cfg", "text_cfg"}``).

    The file is added with ``open_clip.add_model_config``; the open_clip model name is its stem.
    """
    path = Path(config_json)
    if not path.is_file():
        raise ConfigError("clip.model", str(path), "open_clip model config file not found")
    oc = _open_clip()
    if path.stem not in oc.list_models():
        oc.add_model_config(path)

    def build() -> tuple[nn.Module, Tokenizer]:
        model = oc.create_model(path.stem, pretrained=None)
        return model.eval(), oc.get_tokenizer(path.stem)

    return build


@dataclass
class ClipBundle:
    """A built CLIP and what the dense/text paths need.

    ``mean``/``std`` are per-channel on the 0..1 pixel scale; ``image_size`` is the native training input
    (square, pixels); ``patch_size`` the ViT patch (pixels); ``embed_dim`` the joint embedding width D.
    ``weights`` is ``"random-init"``, the sha256 hex of the local file, or ``"open_clip:<name>/<tag>"``.
    """

    name: str
    model: nn.Module
    tokenizer: Tokenizer
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    image_size: int
    patch_size: int
    embed_dim: int
    weights: str
    pretrained: str | None = None

    @property
    def visual(self) -> nn.Module:
        """The open_clip ``VisionTransformer`` image tower."""
        return self.model.visual  # type: ignore[return-value]


def _looks_like_path(value: str) -> bool:
    return os.sep in value or "/" in value or value.lower().endswith(_CHECKPOINT_SUFFIXES)


def _short(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0][:200]}" if text else type(e).__name__


def _load_error(path: Path, name: str, e: BaseException) -> CheckpointError:
    refused = refusal(path, f"CLIP '{name}' weights file", e)  # the refused globals, not torch's advice
    if refused is not None:
        return refused
    if isinstance(e, RuntimeError) and "loading state_dict" in str(e):
        return CheckpointError(
            path, f"weights do not fit open_clip model '{name}' ({_short(e)}); check that clip.model matches"
        )
    return CheckpointError(path, f"cannot read CLIP weights ({_short(e)}); re-download or re-save the file")


def _random_init_warning(name: str) -> None:
    msg = (
        f"CLIP '{name}' has NO pretrained weights: they are RANDOM, class names will be meaningless; "
        "pass clip.pretrained (a local open_clip checkpoint) for real results"
    )
    warnings.warn(msg, UserWarning, stacklevel=4)
    log.warning(msg)


_Built = tuple[nn.Module, Tokenizer, str, "str | None"]  # model, tokenizer, fingerprint, weights source


def _build_registered(name: str, pretrained: str | Path | None) -> _Built:
    oc = _open_clip()
    if pretrained is None and name in CLIP_DEFAULT_WEIGHTS:
        pretrained = CLIP_DEFAULT_WEIGHTS[name]()
    with deterministic_init():
        model, tokenizer = CLIP_BUILDERS[name]()
    if pretrained is None:
        _random_init_warning(name)
        return model, tokenizer, RANDOM_INIT, None
    path = Path(pretrained)
    if not path.is_file():
        raise CheckpointError(path, f"CLIP model '{name}' takes a local weights file, and none is there")
    try:
        oc.load_checkpoint(model, str(path), strict=True, weights_only=True)
    except Exception as e:  # torch/open_clip raise many types for bad files
        raise _load_error(path, name, e) from e
    return model, tokenizer, weights_fingerprint(path), str(path)


def _build_open_clip(name: str, pretrained: str | Path | None) -> _Built:
    oc = _open_clip()
    if name not in oc.list_models():
        known = list(CLIP_BUILDERS) + oc.list_models()
        close = difflib.get_close_matches(name, known, n=1)
        raise ConfigError(
            "clip.model",
            name,
            "unknown open_clip model",
            valid="open_clip.list_models() or a registered name",
            suggestion=close[0] if close else None,
        )
    tokenizer = oc.get_tokenizer(name)
    if pretrained is None:
        with deterministic_init():
            model = oc.create_model(name, pretrained=None)
        _random_init_warning(name)
        return model, tokenizer, RANDOM_INIT, None
    value = str(pretrained)
    if Path(value).is_file():
        try:
            model = oc.create_model(name, pretrained=value, weights_only=True)
        except Exception as e:
            raise _load_error(Path(value), name, e) from e
        return model, tokenizer, weights_fingerprint(value), value
    if isinstance(pretrained, Path) or _looks_like_path(value):
        raise CheckpointError(value, "CLIP weights file not found; check clip.pretrained")
    tags = oc.list_pretrained_tags_by_model(name)
    if value not in tags:
        raise CheckpointError(
            value, f"not a file and not an open_clip tag for '{name}' (tags: {', '.join(tags) or 'none'})"
        )
    try:
        model = oc.create_model(name, pretrained=value)
    except Exception as e:
        raise CheckpointError(
            value,
            f"open_clip weights '{name}/{value}' are not cached and downloads are off (HF_HUB_OFFLINE=1); "
            "fetch them on a connected machine and pass the local file as clip.pretrained",
        ) from e
    return model, tokenizer, f"open_clip:{name}/{value}", value


def clip_weights_fingerprint(name: str, pretrained: str | Path | None = None) -> str:
    """``build_clip(name, pretrained).weights`` without building the model: ``"random-init"``, the
    sha256 of the local file, or ``"open_clip:<name>/<tag>"`` (whether the tag is cached is checked
    where the model is built).

    Raises:
        CheckpointError: a path-like ``pretrained`` that is not a file, or a registered model's
            shipped weights missing or corrupted.
    """
    if name not in CLIP_BUILDERS:
        load_plugins()
    if name in CLIP_BUILDERS:
        if pretrained is None and name in CLIP_DEFAULT_WEIGHTS:
            pretrained = CLIP_DEFAULT_WEIGHTS[name]()
        return RANDOM_INIT if pretrained is None else weights_fingerprint(pretrained)
    if pretrained is None:
        return RANDOM_INIT
    value = str(pretrained)
    if Path(value).is_file():
        return weights_fingerprint(value)
    if isinstance(pretrained, Path) or _looks_like_path(value):
        raise CheckpointError(value, "CLIP weights file not found; check clip.pretrained")
    return f"open_clip:{name}/{value}"


def check_dense_capable(visual: nn.Module, name: str) -> None:
    """Raise ``ConfigError`` unless ``visual`` is an open_clip ``VisionTransformer`` without attn pooling."""
    from open_clip.transformer import VisionTransformer

    if not isinstance(visual, VisionTransformer):
        raise ConfigError(
            "clip.model",
            name,
            f"dense (GEM) features need an open_clip ViT image tower, this one is {type(visual).__name__}",
            valid="ViT-* open_clip models (e.g. ViT-B-16) or a registered ViT model",
        )
    if getattr(visual, "attn_pool", None) is not None:
        raise ConfigError("clip.model", name, "ViT towers with attentional pooling (CoCa) are not supported")


def build_clip(
    name: str, pretrained: str | Path | None = None, device: str | torch.device = "cpu"
) -> ClipBundle:
    """Build an open_clip model in eval mode.

    Args:
        name: a registered name (``CLIP_BUILDERS``) or an open_clip model name (e.g. ``ViT-B-16``).
        pretrained: an open_clip tag (used only if already cached: no network), a local checkpoint file
            (plain state_dict or ``{"state_dict": sd}``), or None → shipped weights for registered models,
            else random init with a loud warning.
        device: where to put the model.

    Raises:
        ConfigError: unknown model name, or an image tower that is not an open_clip ViT.
        CheckpointError: missing/corrupt file, weights of another architecture, unknown or uncached tag.
    """
    if name not in CLIP_BUILDERS:
        load_plugins()
    if name in CLIP_BUILDERS:
        model, tokenizer, fp, source = _build_registered(name, pretrained)
    else:
        model, tokenizer, fp, source = _build_open_clip(name, pretrained)
    visual = model.visual
    check_dense_capable(visual, name)
    pcfg: dict[str, Any] = _open_clip().get_model_preprocess_cfg(model)
    mean = tuple(float(v) for v in pcfg.get("mean", (0.48145466, 0.4578275, 0.40821073)))
    std = tuple(float(v) for v in pcfg.get("std", (0.26862954, 0.26130258, 0.27577711)))
    model = model.to(device).eval()
    return ClipBundle(
        name=name,
        model=model,
        tokenizer=tokenizer,
        mean=mean,  # type: ignore[arg-type]
        std=std,  # type: ignore[arg-type]
        image_size=int(visual.image_size[0]),
        patch_size=int(visual.patch_size[0]),
        embed_dim=int(visual.output_dim),
        weights=fp,
        pretrained=source,
    )


def save_clip_checkpoint(model: nn.Module, path: str | Path, overwrite: bool = False) -> Path:
    """Write an open_clip model's state_dict (plain dict of CPU tensors) atomically; never over a file."""
    p = Path(path)
    refuse_overwrite(p, force=overwrite)
    sd = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    atomic_write_with(p, lambda f: torch.save(sd, f))
    return p
