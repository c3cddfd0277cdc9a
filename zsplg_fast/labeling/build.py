"""Config → a ready ZeroShotLabeler and the manifest that fingerprints it.

Mask sources are a registry (name → builder): ``upstream`` is segment-anything's own
``SamAutomaticMaskGenerator`` with eager CLIP (the reference); ``fast`` is the engine-based AMG on the
``label.backend`` engines (torch modules, ONNX artifacts or TensorRT plans).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from zsplg_fast.config import Config, fingerprint, to_dict
from zsplg_fast.errors import ConfigError
from zsplg_fast.labeling.classify import DenseFn, MaskClassifier
from zsplg_fast.labeling.labeler import ZeroShotLabeler
from zsplg_fast.labeling.masks import MaskSource, UpstreamMaskSource

log = logging.getLogger(__name__)


class Models:
    """What a mask-source builder may need, built on first use only (ORT/TRT runs never build SAM)."""

    def __init__(self, cfg: Config, device: torch.device) -> None:
        from zsplg_fast.models import build_clip, resolve_sam_checkpoint, weights_fingerprint

        self.cfg, self.device = cfg, device
        self.clip = build_clip(cfg.clip.model, cfg.clip.pretrained, device=device)
        self.weights = {
            "sam": weights_fingerprint(resolve_sam_checkpoint(cfg.sam.variant, cfg.sam.checkpoint)),
            "clip": self.clip.weights,
        }

    @functools.cached_property
    def sam(self) -> torch.nn.Module:
        from zsplg_fast.models import build_sam

        return build_sam(self.cfg.sam.variant, self.cfg.sam.checkpoint, device=self.device)

    @functools.cached_property
    def dense(self) -> torch.nn.Module:
        from zsplg_fast.models import DenseClip

        return DenseClip.from_bundle(self.clip, self.cfg.clip).to(self.device)


MaskSourceBuilder = Callable[[Models], tuple[MaskSource, DenseFn, dict[str, Any]]]


def _upstream(m: Models) -> tuple[MaskSource, DenseFn, dict[str, Any]]:
    return UpstreamMaskSource(m.sam, m.cfg.amg), m.dense, {"masks": "upstream", "backend": "torch"}


def _fast(m: Models) -> tuple[MaskSource, DenseFn, dict[str, Any]]:
    from zsplg_fast.labeling.amg import MaskGenerator
    from zsplg_fast.labeling.engines import label_engines

    cfg = m.cfg
    needs_torch = cfg.label.backend == "torch"
    eng = label_engines(
        cfg, m.sam if needs_torch else None, m.dense if needs_torch else None, m.weights, m.device, models=m
    )
    gen = MaskGenerator(
        eng.encoder,
        eng.decoder,
        cfg.amg,
        decoder_image=eng.decoder_image,
        prompt_batch=cfg.label.prompt_batch,
    )
    return gen, eng.dense, {"masks": "fast", **eng.describe}


MASK_SOURCES: dict[str, MaskSourceBuilder] = {"upstream": _upstream, "fast": _fast}


def register_mask_source(name: str, builder: MaskSourceBuilder) -> None:
    """Register ``builder(models) -> (mask source, dense fn, description)`` under ``name``."""
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
    """Fingerprint of everything that changes the labels (not paths, workers, executor or backend)."""
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
            # only when changed: folders labelled before the setting existed keep their fingerprint
            **({"work_long_side": cfg.label.work_long_side} if cfg.label.work_long_side != 2048 else {}),
        }
    )


def build_labeler(cfg: Config, class_names: list[list[str]] | None = None) -> BuiltLabeler:
    """Build the mask source, the GEM dense features and the class-prompt embeddings from ``cfg``.

    ``class_names`` (one list of synonyms per label value) stands in for reading
    ``cfg.classify.classes`` when that file is not written yet (``classes: auto``).
    """
    from zsplg_fast.models import build_text_embeddings, load_class_names

    device = resolve_device(cfg.label.device)
    if cfg.label.masks not in MASK_SOURCES:
        raise ConfigError(
            "label.masks", cfg.label.masks, "unknown mask source", valid=", ".join(MASK_SOURCES)
        )
    models = Models(cfg, device)
    masks, dense, described = MASK_SOURCES[cfg.label.masks](models)
    if class_names is None:
        class_names = load_class_names(cfg.classify.classes)
    prompted = class_names if cfg.classify.include_background_prompt else class_names[1:]
    text = build_text_embeddings(models.clip, prompted, cfg.clip.templates)
    classifier = MaskClassifier(
        dense,
        text,
        image_size=cfg.clip.image_size,
        mean=models.clip.mean,
        std=models.clip.std,
        logit_scale=cfg.classify.logit_scale,
        score_threshold=cfg.classify.score_threshold,
        background_in_text=cfg.classify.include_background_prompt,
        device=device,
    )
    manifest = {
        "fingerprint": labeling_fingerprint(cfg, models.weights, class_names),
        "weights": models.weights,
        "classes": [names[0] for names in class_names],
        "class_synonyms": class_names,
        "engines": described,
        "config": to_dict(cfg),
        "device": str(device),
        "torch": torch.__version__,
    }
    labeler = ZeroShotLabeler(
        masks,
        classifier,
        uncovered=cfg.classify.uncovered,
        work_long_side=cfg.label.work_long_side,
        check_first=cfg.label.check_first,
    )
    return BuiltLabeler(labeler, class_names, manifest)


def describe_labeling(cfg: Config, class_names: list[list[str]], where: str) -> dict[str, Any]:
    """The manifest :func:`build_labeler` writes, made without building a model or loading an engine
    (the Ray driver's: the actors build them). The same fingerprint and weights; ``where`` says where the
    engines and the device are chosen.

    Raises:
        ConfigError: unknown SAM variant. CheckpointError: a weights file that is not there.
    """
    from zsplg_fast.models import resolve_sam_checkpoint, weights_fingerprint
    from zsplg_fast.models.clip import clip_weights_fingerprint

    weights = {
        "sam": weights_fingerprint(resolve_sam_checkpoint(cfg.sam.variant, cfg.sam.checkpoint)),
        "clip": clip_weights_fingerprint(cfg.clip.model, cfg.clip.pretrained),
    }
    return {
        "fingerprint": labeling_fingerprint(cfg, weights, class_names),
        "weights": weights,
        "classes": [names[0] for names in class_names],
        "class_synonyms": class_names,
        "engines": {"backend": cfg.label.backend, "masks": cfg.label.masks, "built": where},
        "config": to_dict(cfg),
        "device": where,
        "torch": torch.__version__,
    }


def labeler_factory(cfg: Config) -> ZeroShotLabeler:
    """Picklable entry point for remote workers (Ray actors): build and return just the labeler."""
    return build_labeler(cfg).labeler
