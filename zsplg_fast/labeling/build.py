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
from zsplg_fast.labeling.defaults import RunMode, persistent_inductor_cache, resolve_run_mode
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
    from zsplg_fast.labeling.masks import UpstreamSam2MaskSource
    from zsplg_fast.models.sam import sam_family

    family = sam_family(m.cfg.sam.variant)
    source = {"sam": UpstreamMaskSource, "sam2": UpstreamSam2MaskSource}[family](m.sam, m.cfg.amg)
    return source, m.dense, {"masks": "upstream", "backend": "torch", "proposer": family}


def _fast(m: Models) -> tuple[MaskSource, DenseFn, dict[str, Any]]:
    from zsplg_fast.labeling.amg import MaskGenerator
    from zsplg_fast.labeling.engines import label_engines

    cfg = m.cfg
    needs_torch = cfg.label.backend == "torch"
    eng = label_engines(
        cfg, m.sam if needs_torch else None, m.dense if needs_torch else None, m.weights, m.device, models=m
    )
    from zsplg_fast.labeling.proposers import make_proposer

    gen = MaskGenerator(
        eng.encoder,
        eng.decoder,
        cfg.amg,
        decoder_image=eng.decoder_image,
        prompt_batch=cfg.label.prompt_batch,
        compile_filter=cfg.label.compile == "on",
        proposer=make_proposer(eng.family, cfg.amg, eng.decoder_meta),
        mask_threshold=cfg.amg.mask_threshold,
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


# AMG keys added with SAM 2: in the fingerprint only when changed (folders labelled before keep theirs)
_SAM2_AMG_DEFAULTS = {"mask_threshold": 0.0, "multimask_output": True, "use_m2m": False}


def _amg_fingerprinted(cfg: Config) -> dict[str, Any]:
    amg = to_dict(cfg.amg)
    return {k: v for k, v in amg.items() if k not in _SAM2_AMG_DEFAULTS or _SAM2_AMG_DEFAULTS[k] != v}


def labeling_fingerprint(cfg: Config, weights: dict[str, str], class_names: list[list[str]]) -> str:
    """Fingerprint of everything that changes the labels (not paths, workers, executor or backend)."""
    return fingerprint(
        {
            "sam": to_dict(cfg.sam),
            "clip": to_dict(cfg.clip),
            "amg": _amg_fingerprinted(cfg),
            "classify": to_dict(cfg.classify),
            "masks": cfg.label.masks,
            "precision": cfg.label.precision,
            "weights": weights,
            "classes": class_names,
            # only when changed: folders labelled before the setting existed keep their fingerprint
            **({"work_long_side": cfg.label.work_long_side} if cfg.label.work_long_side != 2048 else {}),
        }
    )


def proposer_record(cfg: Config, sha256: str) -> dict[str, Any]:
    """The manifest's mask-proposer entry: family (``sam`` | ``sam2``), variant, checkpoint path and its
    sha256 (``random-init`` without one)."""
    from zsplg_fast.models.sam import sam_family

    return {
        "family": sam_family(cfg.sam.variant),
        "variant": cfg.sam.variant,
        "checkpoint": cfg.sam.checkpoint,
        "sha256": sha256,
    }


def build_labeler(
    cfg: Config, class_names: list[list[str]] | None = None, n_images: int | None = None
) -> BuiltLabeler:
    """Build the mask source, the GEM dense features and the class-prompt embeddings from ``cfg``.

    ``class_names`` (one list of synonyms per label value) stands in for reading
    ``cfg.classify.classes`` when that file is not written yet (``classes: auto``). ``n_images``: the
    job's size, for ``label.compile: auto`` (None: unknown, no compile). ``precision``/``compile``
    ``auto`` are resolved here (:mod:`zsplg_fast.labeling.defaults`); the manifest records what ran.
    """
    from zsplg_fast.models import build_text_embeddings, load_class_names

    device = resolve_device(cfg.label.device)
    cfg, mode = _resolve_mode(cfg, device, n_images)
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
        "proposer": proposer_record(cfg, models.weights["sam"]),
        "config": to_dict(cfg),
        "device": str(device),
        "run_mode": mode.describe(),
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


def describe_labeling(
    cfg: Config, class_names: list[list[str]], where: str, mode: RunMode | None = None
) -> dict[str, Any]:
    """The manifest :func:`build_labeler` writes, made without building a model or loading an engine
    (the Ray driver's: the actors build them). The same fingerprint, weights, proposer record and run mode
    (``precision`` / ``compile``); ``where`` says where the engines and the device are chosen. ``mode``:
    what :func:`resolve_run_config` returned for ``cfg`` (resolved here when None).

    Raises:
        ConfigError: unknown SAM variant. CheckpointError: a weights file that is not there.
    """
    from zsplg_fast.models import resolve_sam_checkpoint, weights_fingerprint
    from zsplg_fast.models.clip import clip_weights_fingerprint

    if mode is None:
        cfg, mode = resolve_run_config(cfg)
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
        "proposer": proposer_record(cfg, weights["sam"]),
        "config": to_dict(cfg),
        "device": where,
        "run_mode": mode.describe(),
        "torch": torch.__version__,
    }


def resolve_run_config(cfg: Config, n_images: int | None = None) -> tuple[Config, RunMode]:
    """``cfg`` with ``label.precision`` / ``label.compile`` resolved for ``label.device`` as this process
    sees it (``auto``: CUDA when this process has it), and the mode: what a driver that builds no model
    records and hands its workers, so the manifest says what they run. A CPU-only Ray head therefore gives
    fp32 eager (exact) unless the config names ``precision`` / ``compile``; ``n_images`` as in
    :func:`build_labeler` (per worker)."""
    return _resolve_mode(cfg, resolve_device(cfg.label.device), n_images)


def labeler_factory(cfg: Config, n_images: int | None = None) -> ZeroShotLabeler:
    """Picklable entry point for remote workers (Ray actors): build and return just the labeler."""
    return build_labeler(cfg, n_images=n_images).labeler


def _resolve_mode(cfg: Config, device: torch.device, n_images: int | None) -> tuple[Config, RunMode]:
    """``cfg`` with ``label.precision`` / ``label.compile`` resolved (auto → what runs here), and the mode."""
    from dataclasses import replace

    backend = cfg.label.backend if cfg.label.masks == "fast" else "upstream"
    mode = resolve_run_mode(cfg.label.precision, cfg.label.compile, device, backend, n_images)
    if mode.compile:
        persistent_inductor_cache()
    label = replace(cfg.label, precision=mode.precision, compile="on" if mode.compile else "off")
    return replace(cfg, label=label), mode
