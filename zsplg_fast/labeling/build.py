"""Config → a ready ZeroShotLabeler and the manifest that fingerprints it.

Mask sources are a registry (name → builder): ``upstream`` is segment-anything's own
``SamAutomaticMaskGenerator``; the engine-based fast generator registers itself as ``fast``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from zsplg_fast.config import Config, fingerprint, to_dict
from zsplg_fast.errors import ConfigError
from zsplg_fast.labeling.classify import MaskClassifier
from zsplg_fast.labeling.labeler import ZeroShotLabeler
from zsplg_fast.labeling.masks import MaskSource, UpstreamMaskSource

log = logging.getLogger(__name__)

MaskSourceBuilder = Callable[[Config, torch.nn.Module, torch.device], MaskSource]
MASK_SOURCES: dict[str, MaskSourceBuilder] = {
    "upstream": lambda cfg, sam, device: UpstreamMaskSource(sam, cfg.amg),
}


def register_mask_source(name: str, builder: MaskSourceBuilder) -> None:
    """Register a mask-source builder ``(cfg, sam, device) -> MaskSource`` under ``name``."""
    MASK_SOURCES[name] = builder


def resolve_device(spec: str) -> torch.device:
    """'auto' → cuda if available else cpu; otherwise the torch device named by ``spec``."""
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(spec)
    except RuntimeError as e:
        raise ConfigError("label.device", spec, "not a torch device", valid="auto, cpu, cuda, cuda:N") from e
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("label.device", spec, "CUDA is not available on this machine", valid="auto, cpu")
    return dev


@dataclass
class BuiltLabeler:
    """The labeler plus what describes it: class names (index = label value) and the manifest."""

    labeler: ZeroShotLabeler
    class_names: list[list[str]]
    manifest: dict[str, Any]


def labeling_fingerprint(cfg: Config, weights: dict[str, str], class_names: list[list[str]]) -> str:
    """Fingerprint of everything that changes the labels (not paths, workers or the executor)."""
    return fingerprint(
        {
            "sam": to_dict(cfg.sam),
            "clip": to_dict(cfg.clip),
            "amg": to_dict(cfg.amg),
            "classify": to_dict(cfg.classify),
            "masks": cfg.label.masks,
            "precision": cfg.label.precision,
            "weights": weights,
            "classes": class_names,
        }
    )


def build_labeler(cfg: Config) -> BuiltLabeler:
    """Build SAM, CLIP (GEM dense), the class-prompt embeddings and the mask source from ``cfg``."""
    from zsplg_fast.models import (
        DenseClip,
        build_clip,
        build_sam,
        build_text_embeddings,
        load_class_names,
        resolve_sam_checkpoint,
        weights_fingerprint,
    )

    device = resolve_device(cfg.label.device)
    if cfg.label.masks not in MASK_SOURCES:
        raise ConfigError(
            "label.masks", cfg.label.masks, "unknown mask source", valid=", ".join(MASK_SOURCES)
        )
    sam = build_sam(cfg.sam.variant, cfg.sam.checkpoint, device=device)
    clip = build_clip(cfg.clip.model, cfg.clip.pretrained, device=device)
    dense = DenseClip.from_bundle(clip, cfg.clip).to(device)
    class_names = load_class_names(cfg.classify.classes)
    prompted = class_names if cfg.classify.include_background_prompt else class_names[1:]
    text = build_text_embeddings(clip, prompted, cfg.clip.templates)
    classifier = MaskClassifier(
        dense,
        text,
        image_size=cfg.clip.image_size,
        mean=clip.mean,
        std=clip.std,
        logit_scale=cfg.classify.logit_scale,
        score_threshold=cfg.classify.score_threshold,
        background_in_text=cfg.classify.include_background_prompt,
        device=device,
    )
    masks = MASK_SOURCES[cfg.label.masks](cfg, sam, device)
    weights = {
        "sam": weights_fingerprint(resolve_sam_checkpoint(cfg.sam.variant, cfg.sam.checkpoint)),
        "clip": clip.weights,
    }
    manifest = {
        "fingerprint": labeling_fingerprint(cfg, weights, class_names),
        "weights": weights,
        "classes": [names[0] for names in class_names],
        "class_synonyms": class_names,
        "config": to_dict(cfg),
        "device": str(device),
        "torch": torch.__version__,
    }
    labeler = ZeroShotLabeler(masks, classifier, uncovered=cfg.classify.uncovered)
    return BuiltLabeler(labeler, class_names, manifest)


def labeler_factory(cfg: Config) -> ZeroShotLabeler:
    """Picklable entry point for remote workers (Ray actors): build and return just the labeler."""
    return build_labeler(cfg).labeler
