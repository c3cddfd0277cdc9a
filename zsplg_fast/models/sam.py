"""SAM builders (registry of variants) and official-style checkpoint loading.

The real variants are built by segment-anything's own ``build_sam_vit_*`` functions (checkpoint=None;
we load weights ourselves, so that bad files become ``CheckpointError``). ``tiny`` is a ~1.9M-parameter
config assembled from the upstream modules (follows segment_anything/build_sam.py ``_build_sam``) that
runs unchanged under ``SamPredictor`` and ``SamAutomaticMaskGenerator``.
"""

from __future__ import annotations

import difflib
import logging
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch
from segment_anything.build_sam import build_sam_vit_b, build_sam_vit_h, build_sam_vit_l
from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer

from zsplg_fast.errors import CheckpointError, ConfigError
from zsplg_fast.models.init import deterministic_init
from zsplg_fast.models.plugins import load_plugins
from zsplg_fast.models.safe_load import refusal
from zsplg_fast.models.sam2 import (
    SAM2_CONFIGS,
    build_sam2_random,
    checkpoint_facts,
    config_facts,
    identify_sam2_variant,
    is_sam2_variant,
    sam2_input_size,
)
from zsplg_fast.utils.io import atomic_write_with, refuse_overwrite

log = logging.getLogger(__name__)

SamBuilder = Callable[[], Sam]
DefaultCheckpoint = Callable[[], "Path | None"]

RANDOM_INIT = "random-init"


def build_sam_tiny() -> Sam:
    """A tiny SAM (1.85M params): 256 px input, 16×16 embedding grid, 128-d prompt/decoder width."""
    image_size, patch, dim = 256, 16, 128
    grid = image_size // patch
    sam = Sam(
        image_encoder=ImageEncoderViT(
            img_size=image_size,
            patch_size=patch,
            embed_dim=128,
            depth=4,
            num_heads=4,
            mlp_ratio=4.0,
            out_chans=dim,
            qkv_bias=True,
            norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
            use_rel_pos=True,
            window_size=8,
            global_attn_indexes=(1, 3),
        ),
        prompt_encoder=PromptEncoder(
            embed_dim=dim,
            image_embedding_size=(grid, grid),
            input_image_size=(image_size, image_size),
            mask_in_chans=16,
        ),
        mask_decoder=MaskDecoder(
            num_multimask_outputs=3,
            transformer=TwoWayTransformer(depth=2, embedding_dim=dim, mlp_dim=512, num_heads=4),
            transformer_dim=dim,
            iou_head_depth=3,
            iou_head_hidden_dim=128,
        ),
    )
    return sam.eval()


SAM_BUILDERS: dict[str, SamBuilder] = {
    "vit_h": build_sam_vit_h,
    "vit_l": build_sam_vit_l,
    "vit_b": build_sam_vit_b,
    "tiny": build_sam_tiny,
    # SAM 2 / 2.1 (zsplg_fast.models.sam2): a ``SAM2Base`` through the official ``sam2`` package
    **{name: partial(build_sam2_random, name) for name in SAM2_CONFIGS},
}
"""Variant name → zero-argument builder returning a randomly initialised ``Sam`` (or ``SAM2Base``)."""


def sam_family(variant: str) -> str:
    """``"sam2"`` for SAM 2 / 2.1 variants, else ``"sam"`` (segment-anything)."""
    return "sam2" if is_sam2_variant(variant) else "sam"


SAM_DEFAULT_CHECKPOINTS: dict[str, DefaultCheckpoint] = {}
"""Variant name → callable giving its shipped weights (used when no checkpoint is passed)."""


def register_sam_variant(
    name: str, builder: SamBuilder, default_checkpoint: DefaultCheckpoint | None = None
) -> None:
    """Add (or replace) a SAM variant, e.g. the toy world's ``toy`` with its shipped weights."""
    SAM_BUILDERS[name] = builder
    _SIGNATURES.pop(name, None)
    if default_checkpoint is not None:
        SAM_DEFAULT_CHECKPOINTS[name] = default_checkpoint
    else:
        SAM_DEFAULT_CHECKPOINTS.pop(name, None)


def register_sam2_variant(name: str, config: str | Mapping[str, object]) -> None:
    """Add a SAM 2 variant: a ``sam2`` package config name or a config mapping (with a ``model`` key)."""
    SAM2_CONFIGS[name] = config
    register_sam_variant(name, partial(build_sam2_random, name))


@dataclass(frozen=True)
class SamInfo:
    """What callers need to preprocess for a SAM: square input size, grid and normalisation (0..255 scale)."""

    img_size: int
    patch_size: int
    embedding_size: int
    embed_dim: int
    prompt_embed_dim: int
    depth: int
    pixel_mean: tuple[float, float, float]
    pixel_std: tuple[float, float, float]


def sam_info(model: Sam) -> SamInfo:
    """Read input size, grid (``img_size // patch``), widths and pixel mean/std from a built ``Sam``."""
    enc = model.image_encoder
    patch = int(enc.patch_embed.proj.kernel_size[0])
    return SamInfo(
        img_size=int(enc.img_size),
        patch_size=patch,
        embedding_size=int(enc.img_size) // patch,
        embed_dim=int(enc.pos_embed.shape[-1]) if enc.pos_embed is not None else int(enc.neck[0].in_channels),
        prompt_embed_dim=int(model.prompt_encoder.embed_dim),
        depth=len(enc.blocks),
        pixel_mean=tuple(round(float(v), 4) for v in model.pixel_mean.flatten()),  # type: ignore[arg-type]
        pixel_std=tuple(round(float(v), 4) for v in model.pixel_std.flatten()),  # type: ignore[arg-type]
    )


# ---- checkpoint inspection -------------------------------------------------------------------------------

_SIGNATURES: dict[str, dict[str, tuple[int, ...]]] = {}


def _signature(variant: str) -> dict[str, tuple[int, ...]]:
    """Key → shape of a variant's state_dict, built on the meta device (no memory, ~50 ms even for vit_h)."""
    if variant not in _SIGNATURES:
        with torch.device("meta"):
            model = SAM_BUILDERS[variant]()
        _SIGNATURES[variant] = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    return _SIGNATURES[variant]


def sam_input_size(variant: str) -> int:
    """The square input size S of ``variant`` (1024 for vit_* and the SAM 2.1 Hiera configs), from its
    architecture built on the meta device (SAM 2: its config): no weights read, no memory (for a driver
    that must not build models, e.g. the Ray executor).

    Raises:
        ConfigError: unknown variant.
    """
    if variant not in SAM_BUILDERS:
        resolve_sam_checkpoint(variant)  # loads the plugins; ConfigError for an unknown name
    if is_sam2_variant(variant):  # Hiera cannot be built on the meta device: S from the config
        return sam2_input_size(variant)
    with torch.device("meta"):
        model = SAM_BUILDERS[variant]()
    return int(model.image_encoder.img_size)


def _describe(sd: Mapping[str, torch.Tensor]) -> str:
    """Architecture summary of a SAM state_dict: encoder width, depth and embedding grid."""
    pos = sd.get("image_encoder.pos_embed")
    blocks = {k.split(".")[2] for k in sd if k.startswith("image_encoder.blocks.")}
    if pos is None or pos.ndim != 4:
        return f"an unknown SAM layout ({len(sd)} tensors)"
    return f"encoder width {pos.shape[-1]}, depth {len(blocks)}, grid {pos.shape[1]}×{pos.shape[2]}"


def identify_sam_variant(sd: Mapping[str, torch.Tensor]) -> str | None:
    """The registered variant whose keys and shapes match ``sd`` exactly (SAM 2: the official variant of
    the same trunk width, depth and generation), else ``None``."""
    if checkpoint_facts(sd) is not None:
        return identify_sam2_variant(sd)
    shapes = {k: tuple(v.shape) for k, v in sd.items()}
    for name in SAM_BUILDERS:
        if not is_sam2_variant(name) and _signature(name) == shapes:
            return name
    return None


def _looks_like(sd: Mapping[str, torch.Tensor]) -> tuple[str, str | None]:
    """(what ``sd`` looks like, in words; the variant to suggest or None)."""
    guess = identify_sam_variant(sd)
    facts = checkpoint_facts(sd)
    if facts is not None:
        return (f"{facts.describe()} = '{guess}'" if guess else facts.describe()), guess
    return (f"SAM '{guess}' (segment-anything)" if guess else _describe(sd)), guess


def _unwrap(obj: object, path: Path) -> dict[str, torch.Tensor]:
    """Accept a plain state_dict or ``{"model": sd}`` / ``{"state_dict": sd}``; strip ``module.``."""
    if isinstance(obj, Mapping):
        for key in ("model", "state_dict"):
            if key in obj and isinstance(obj[key], Mapping):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(path, "not a SAM state_dict (expected a dict of tensors); re-save it")
    sd = {str(k): v for k, v in obj.items()}
    if all(k.startswith("module.") for k in sd):
        sd = {k[len("module.") :]: v for k, v in sd.items()}
    return sd


def read_sam_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Load an official-style SAM ``.pth`` (weights only, on CPU). Missing/corrupt → ``CheckpointError``."""
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(p, "SAM checkpoint not found; check --sam-checkpoint")
    try:
        obj = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises several types for truncated / non-pickle files
        refused = refusal(p, "SAM checkpoint", e)  # the refused globals, when that is the reason
        raise refused or CheckpointError(
            p, f"cannot read SAM checkpoint ({type(e).__name__}); re-download it"
        ) from e
    return _unwrap(obj, p)


def _check_variant(
    sd: Mapping[str, torch.Tensor], variant: str, path: Path, want: dict[str, tuple[int, ...]] | None = None
) -> None:
    """Refuse ``sd`` unless its keys and shapes are ``want`` (default: the variant's signature)."""
    want = _signature(variant) if want is None else want
    got = {k: tuple(v.shape) for k, v in sd.items()}
    if got == want:
        return
    looks, guess = _looks_like(sd)
    if guess == variant:
        guess = None  # same architecture, different keys: say which are missing
    missing = sorted(set(want) - set(got))
    extra = sorted(set(got) - set(want))
    shaped = sorted(k for k in set(want) & set(got) if want[k] != got[k])
    hint = f"; pass --sam {guess}" if guess else ""
    detail = ""
    if not guess and want:
        parts = [f"{len(missing)} missing keys, e.g. {missing[0]}"] if missing else []
        parts += [f"{len(extra)} unexpected keys, e.g. {extra[0]}"] if extra else []
        parts += [f"{len(shaped)} keys of another shape, e.g. {shaped[0]}"] if shaped else []
        detail = f" ({'; '.join(parts)})" if parts else ""
    raise CheckpointError(
        path, f"checkpoint looks like {looks}, but variant '{variant}' was asked{detail}{hint}"
    )


def resolve_sam_checkpoint(variant: str, checkpoint: str | Path | None = None) -> Path | None:
    """The file ``build_sam`` will load: ``checkpoint``, else the variant's shipped default, else None.

    Raises:
        ConfigError: unknown variant.
    """
    if variant not in SAM_BUILDERS:
        load_plugins()
    if variant not in SAM_BUILDERS:
        close = difflib.get_close_matches(variant, list(SAM_BUILDERS), n=1)
        raise ConfigError(
            "sam.variant",
            variant,
            "unknown SAM variant",
            valid=", ".join(SAM_BUILDERS),
            suggestion=close[0] if close else None,
        )
    if checkpoint is None and variant in SAM_DEFAULT_CHECKPOINTS:
        checkpoint = SAM_DEFAULT_CHECKPOINTS[variant]()
    return Path(checkpoint) if checkpoint is not None else None


def build_sam(variant: str, checkpoint: str | Path | None = None, device: str | torch.device = "cpu") -> Sam:
    """Build a SAM in eval mode.

    Args:
        variant: a key of ``SAM_BUILDERS`` (vit_h, vit_l, vit_b, tiny, sam2.1_hiera_t|s|b+|l,
            sam2_hiera_t|s|b+|l, sam2_tiny, or a registered one).
        checkpoint: official-style state_dict ``.pth`` (also ``{"model": sd}`` / ``{"state_dict": sd}``;
            SAM 2's official ``.pt`` files are ``{"model": sd}``).
            ``None`` uses the variant's shipped weights if registered, else random init with a loud warning.
        device: where to put the model.

    Raises:
        ConfigError: unknown variant.
        CheckpointError: missing or corrupt file, or weights of another variant or family (named in the
            message), or missing keys.
        MissingDependencyError: a SAM 2 variant without the ``sam2`` package.
    """
    checkpoint = resolve_sam_checkpoint(variant, checkpoint)
    sd = None
    sam2 = is_sam2_variant(variant)
    if checkpoint is not None:
        path = Path(checkpoint)
        sd = read_sam_state_dict(path)
        if not sam2:
            _check_variant(sd, variant, path)
        elif checkpoint_facts(sd) != config_facts(variant):  # another family or size: refuse unbuilt
            _check_variant(sd, variant, path, want={})
    with deterministic_init():  # "random-init" is the same model in every process
        model = SAM_BUILDERS[variant]()
    if sd is not None:
        if sam2:  # SAM 2 cannot be built on the meta device (Hiera calls .item()): compare the built one
            _check_variant(sd, variant, path, want={k: tuple(v.shape) for k, v in model.state_dict().items()})
        model.load_state_dict(sd, strict=True)
    else:
        msg = (
            f"SAM '{variant}' has NO checkpoint: weights are RANDOM, masks will be meaningless; "
            "pass sam.checkpoint (an official .pth) for real results"
        )
        warnings.warn(msg, UserWarning, stacklevel=2)
        log.warning(msg)
    return model.to(device).eval()


def save_sam_checkpoint(model: torch.nn.Module, path: str | Path, overwrite: bool = False) -> Path:
    """Write ``model.state_dict()`` in its family's official layout, atomically: a plain dict of CPU
    tensors for SAM (``sam_vit_*.pth``), ``{"model": state_dict}`` for SAM 2 (``sam2.1_hiera_*.pt``)."""
    p = Path(path)
    refuse_overwrite(p, force=overwrite)
    sd = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    obj = {"model": sd} if hasattr(model, "sam_mask_decoder") else sd
    atomic_write_with(p, lambda f: torch.save(obj, f))
    return p


def weights_fingerprint(path: str | Path | None) -> str:
    """``"random-init"`` for no weights, else the hex sha256 of the file's bytes (for manifests), from the
    hash cache when the file's (path, size, mtime, ctime, inode) match: a vit_h or SAM2.1-L checkpoint is
    hashed once, not at every ``label`` / ``run`` (a file replaced under its path has a new inode / ctime)."""
    if path is None:
        return RANDOM_INIT
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(p, "weights file not found; cannot fingerprint it")
    from zsplg_runtime.integrity import file_sha256

    return file_sha256(p)
