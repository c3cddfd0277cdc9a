"""DeepLabV3+ segmenter: build it on a registered backbone, load backbone weights, and read and write
self-describing checkpoints. The network itself (backbone registry, ResNet, ASPP, DeepLabV3+) lives in
``models/deeplab.py``; its public names are re-exported here, so ``zsplg_fast.models.segmenter`` stays the
one import path.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from torch import nn

from zsplg_fast.errors import CheckpointError, ConfigError
from zsplg_fast.models.deeplab import (
    BACKBONES,
    ASPPModule,
    ASPPPooling,
    BackboneSpec,
    Bottleneck,
    DeepLabV3Plus,
    ResNet,
    SegmenterConfig,
)
from zsplg_fast.models.safe_load import load_torch_file
from zsplg_fast.utils.io import atomic_write_with

__all__ = [
    "BACKBONES",
    "BACKBONE_WEIGHTS",
    "CHECKPOINT_FORMAT",
    "CHECKPOINT_VERSION",
    "ASPPModule",
    "ASPPPooling",
    "BackboneSpec",
    "Bottleneck",
    "DeepLabV3Plus",
    "ResNet",
    "SegmenterConfig",
    "build_segmenter",
    "head_parameters",
    "load_backbone_weights",
    "load_checkpoint",
    "register_backbone_weights",
    "resolve_backbone_weights",
    "save_checkpoint",
    "unwrap",
]

log = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "zsplg_fast.segmenter"
CHECKPOINT_VERSION = 1


def _strip_prefixes(state: Mapping[str, torch.Tensor], prefixes: Sequence[str]) -> dict[str, torch.Tensor]:
    out = {}
    for k, v in state.items():
        for p in prefixes:
            if k.startswith(p):
                k = k[len(p) :]
        out[k] = v
    return out


def _read_state(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(p, "file not found; give the path of a saved .pth state_dict")
    obj = load_torch_file(p)  # weights_only=True with our allow-list; refuses code-running pickles
    if not isinstance(obj, dict):
        raise CheckpointError(p, f"expected a dict/state_dict, found {type(obj).__name__}")
    return obj


# Named backbone weights shipped with the project (the toy world's ``toy``): name → path getter.
BACKBONE_WEIGHTS: dict[str, Callable[[], Path]] = {}


def register_backbone_weights(name: str, path: Callable[[], Path]) -> None:
    """Make ``train.model.pretrained: <name>`` load ``path()`` (called, and checked, at build time)."""
    BACKBONE_WEIGHTS[name] = path


def resolve_backbone_weights(spec: str | Path) -> Path:
    """A registered name (plugins load on first need) before a file of that name; else the path, which
    then fails to load with a clear error."""
    if str(spec) not in BACKBONE_WEIGHTS and not Path(spec).is_file():
        from zsplg_fast.models.plugins import load_plugins

        load_plugins()
    getter = BACKBONE_WEIGHTS.get(str(spec))
    return getter() if getter is not None else Path(spec)


def load_backbone_weights(backbone: nn.Module, path: str | Path) -> dict[str, list[str]]:
    """Load a local backbone state_dict (upstream ``pretrained/resnet*.pth`` style) non-strictly.
    ``path`` may also be a registered name (``toy``: the toy world's shipped, sha256-checked backbone).

    Returns ``{"missing": [...], "unexpected": [...], "loaded": [...]}`` and logs the report; a key whose
    shape differs from the model is a :class:`CheckpointError` (wrong architecture).
    """
    path = resolve_backbone_weights(path)
    obj = _read_state(path)
    state = obj.get("state_dict", obj.get("model", obj))
    state = _strip_prefixes(state, ("module.", "backbone."))
    own = backbone.state_dict()
    bad = [k for k, v in state.items() if k in own and tuple(v.shape) != tuple(own[k].shape)]
    if bad:
        k = bad[0]
        raise CheckpointError(
            path,
            f"shape of '{k}' is {tuple(state[k].shape)}, model expects {tuple(own[k].shape)} "
            f"({len(bad)} mismatched keys); is this the right backbone?",
        )
    res = backbone.load_state_dict(state, strict=False)
    report = {
        "missing": list(res.missing_keys),
        "unexpected": list(res.unexpected_keys),
        "loaded": [k for k in state if k in own],
    }
    if not report["loaded"]:
        raise CheckpointError(path, "no key matches the backbone; is this a ResNet state_dict?")
    log.log(
        logging.WARNING if report["missing"] or report["unexpected"] else logging.INFO,
        "backbone weights %s: %d loaded, %d missing %s, %d unexpected %s",
        path,
        len(report["loaded"]),
        len(report["missing"]),
        report["missing"][:5],
        len(report["unexpected"]),
        report["unexpected"][:5],
    )
    return report


def build_segmenter(
    backbone: str,
    num_classes: int,
    pretrained: str | Path | None = None,
    dilations: Sequence[int] = (6, 12, 18),
    replace_stride_with_dilation: Sequence[bool] = (False, False, True),
) -> DeepLabV3Plus:
    """Build DeepLabV3+ on a registered backbone (``BACKBONES``); ``pretrained`` is a local backbone file."""
    if num_classes < 1:
        raise ConfigError("num_classes", num_classes, "must be >= 1")
    cfg = SegmenterConfig(
        backbone, int(num_classes), tuple(int(d) for d in dilations), tuple(replace_stride_with_dilation)
    )  # type: ignore[arg-type]
    model = DeepLabV3Plus(cfg)
    if pretrained is not None:
        load_backbone_weights(model.backbone, pretrained)
    return model


def unwrap(model: nn.Module) -> nn.Module:
    """The plain module inside DDP / DataParallel wrappers."""
    return getattr(model, "module", model)


def head_parameters(model: nn.Module) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """(backbone params, head params): the two SGD groups of upstream (head lr × lr_multi)."""
    named = list(unwrap(model).named_parameters())
    return [p for n, p in named if n.startswith("backbone.")], [
        p for n, p in named if not n.startswith("backbone.")
    ]


def save_checkpoint(
    path: str | Path,
    model: nn.Module,
    class_names: Sequence[str] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> None:
    """Write a self-describing checkpoint atomically: model config, weights, class names, ``extra``."""
    m = unwrap(model)
    cfg: SegmenterConfig = m.config  # type: ignore[assignment]
    state = {k.removeprefix("module."): v.detach().cpu() for k, v in m.state_dict().items()}
    obj = {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "model_config": asdict(cfg),
        "class_names": list(class_names) if class_names is not None else None,
        "state_dict": state,
        **dict(extra or {}),
    }
    atomic_write_with(path, lambda f: torch.save(obj, f))


def load_checkpoint(
    path: str | Path, map_location: str | torch.device = "cpu"
) -> tuple[DeepLabV3Plus, dict[str, Any]]:
    """Rebuild the segmenter from a checkpoint written by :func:`save_checkpoint`.

    Returns ``(model in eval mode, the checkpoint dict)``; the dict keeps ``class_names`` and any
    training state that was saved with it.
    """
    obj = _read_state(path)
    if obj.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(path, "not a zsplg-fast segmenter checkpoint (no model config inside)")
    c = obj["model_config"]
    model = build_segmenter(
        c["backbone"], c["num_classes"], None, c["dilations"], c["replace_stride_with_dilation"]
    )
    try:
        model.load_state_dict(obj["state_dict"], strict=True)
    except RuntimeError as e:
        raise CheckpointError(path, f"weights do not fit the stored model config: {e}") from e
    return model.to(map_location).eval(), obj
