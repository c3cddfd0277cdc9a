"""Model sources per spec family: build the model a spec consumes, and describe it for the sidecar.

The ``source`` record written into every ONNX sidecar is enough to rebuild the same module later
(``load_engine(path, backend="torch")``): family, builder arguments, weights file and its sha256
(or ``"random-init"``, which cannot be rebuilt).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from zsplg_fast.errors import CheckpointError, ConfigError
from zsplg_fast.models import weights_fingerprint

RANDOM_INIT = "random-init"


@dataclass
class Source:
    """A built model and its sidecar record (``{"family", ..., "weights": sha256 | "random-init"}``)."""

    model: Any
    record: dict[str, Any]


def _abs(p: str | Path | None) -> str | None:
    return str(Path(p).resolve()) if p is not None and Path(p).exists() else (str(p) if p else None)


def load_sam(variant: str = "vit_b", checkpoint: str | Path | None = None) -> Source:
    """``Sam`` (or SAM 2's ``SAM2Base``) from ``zsplg_fast.models.build_sam`` (random init, warned, when no
    checkpoint); the record's family is ``sam`` or ``sam2``."""
    from zsplg_fast.models import build_sam, resolve_sam_checkpoint
    from zsplg_fast.models.sam import sam_family

    ckpt = resolve_sam_checkpoint(variant, checkpoint)
    model = build_sam(variant, ckpt)
    rec = {
        "family": sam_family(variant),
        "variant": variant,
        "checkpoint": _abs(ckpt),
        "weights": weights_fingerprint(ckpt),
    }
    return Source(model, rec)


def load_clip(model: str = "ViT-B-16", pretrained: str | Path | None = None) -> Source:
    """``ClipBundle`` from ``zsplg_fast.models.build_clip``."""
    from zsplg_fast.models import build_clip

    bundle = build_clip(model, pretrained)
    rec = {"family": "clip", "model": model, "pretrained": _abs(bundle.pretrained), "weights": bundle.weights}
    return Source(bundle, rec)


def load_segmenter(checkpoint: str | Path) -> Source:
    """DeepLabV3+ from a checkpoint written by ``zsplg_fast.models.segmenter.save_checkpoint``.

    The class names stored in the checkpoint travel as ``model.class_names`` for the spec.
    """
    from zsplg_fast.models.segmenter import load_checkpoint

    model, ckpt = load_checkpoint(checkpoint)
    model.class_names = ckpt.get("class_names")  # type: ignore[assignment]
    rec = {"family": "segmenter", "checkpoint": _abs(checkpoint), "weights": weights_fingerprint(checkpoint)}
    return Source(model, rec)


_REBUILD: dict[str, Callable[[Mapping[str, Any]], Source]] = {
    "sam": lambda r: load_sam(r["variant"], r.get("checkpoint")),
    "sam2": lambda r: load_sam(r["variant"], r.get("checkpoint")),
    "clip": lambda r: load_clip(r["model"], r.get("pretrained")),
    "segmenter": lambda r: load_segmenter(r["checkpoint"]),
}


def rebuild(record: Mapping[str, Any], where: str = "sidecar") -> Source:
    """Rebuild the model a sidecar's ``source`` record describes, checking the weights did not change.

    Raises:
        ConfigError: unknown family, or random-init weights (nothing to rebuild from).
        CheckpointError: the weights file is gone or its sha256 differs from the recorded one.
    """
    family = str(record.get("family"))
    if family not in _REBUILD:
        raise ConfigError(f"{where}.source.family", family, "unknown model family", ", ".join(_REBUILD))
    if record.get("weights") == RANDOM_INIT:
        raise ConfigError(
            f"{where}.source.weights",
            RANDOM_INIT,
            "exported from random weights, which cannot be rebuilt; export again from a saved checkpoint",
        )
    src = _REBUILD[family](record)
    if src.record["weights"] != record.get("weights"):
        raise CheckpointError(
            str(record.get("checkpoint") or record.get("pretrained")),
            "weights changed since the artifact was exported (sha256 differs); export again",
        )
    return src
