"""The labeling pipelines the benchmarks compare, built on one set of (random) weights.

- **A** (:class:`UpstreamPipeline`): segment-anything's ``SamAutomaticMaskGenerator`` on the ``Sam``
  module, plus GEM dense CLIP features in eager PyTorch.
- **B/C/D/E** (:class:`EnginePipeline`): our :class:`~zsplg_fast.labeling.amg.MaskGenerator` on
  ``sam_encoder`` + ``sam_decoder_image`` + ``sam_decoder_shared`` engines (or the one-piece
  ``sam_decoder_batched``, variant B0) and a ``clip_dense`` engine (torch, onnxruntime, onnxruntime INT8,
  torch under bf16 autocast).

Both name masks the same way: :func:`~zsplg_fast.labeling.pooling.pool_masks` of the dense features.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from zsplg_fast.config.labeling import AmgConfig
from zsplg_fast.labeling.amg import MaskGenerator
from zsplg_fast.labeling.classify import clip_preprocess
from zsplg_fast.labeling.engines import dense_from_engine
from zsplg_fast.labeling.masks import MaskSet
from zsplg_fast.labeling.pooling import pool_masks


@dataclass
class PipelineResult:
    """One image: ``masks`` (K, H, W) bool (CPU), ``pooled`` (K, D) float32, ``features`` (D, h, w)
    float32 (CPU), ``stages``: seconds per stage."""

    masks: torch.Tensor
    pooled: torch.Tensor
    features: torch.Tensor
    stages: dict[str, float] = field(default_factory=dict)


@dataclass
class Models:
    """The weights every variant shares: a ``Sam`` (or SAM 2's ``SAM2Base``), an open_clip bundle and the
    GEM dense module; ``family`` is the mask proposer's (``sam`` | ``sam2``)."""

    sam: Any
    clip: Any
    dense: torch.nn.Module
    clip_size: int
    family: str = "sam"


@dataclass(frozen=True)
class FamilySpecs:
    """The spec names a proposer family's engine variants run (``decoder_image`` None: no shared pair)."""

    encoder: str
    decoder: str
    decoder_image: str | None
    one_piece: str


BENCH_SPECS = {
    "sam": FamilySpecs("sam_encoder", "sam_decoder_shared", "sam_decoder_image", "sam_decoder_batched"),
    "sam2": FamilySpecs("sam2_encoder", "sam2_decoder_batched", None, "sam2_decoder_batched"),
}


def build_models(
    sam_variant: str = "vit_b", clip_model: str = "ViT-B-16", clip_size: int = 448, seed: int = 0
) -> Models:
    """Random-init (seeded) SAM and CLIP, as the benchmarks use; warnings about random weights are muted."""
    import warnings

    from zsplg_fast.config.models import ClipConfig
    from zsplg_fast.models import DenseClip, build_clip, build_sam
    from zsplg_fast.models.sam import sam_family

    torch.manual_seed(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sam = build_sam(sam_variant)
        clip = build_clip(clip_model)
    dense = DenseClip.from_bundle(clip, ClipConfig(model=clip_model))
    return Models(sam, clip, dense, clip_size, sam_family(sam_variant))


def _upstream_generator(models: Models, amg: Mapping[str, Any]) -> Any:
    """The family's own automatic mask generator (binary masks) with ``amg`` (AmgConfig fields)."""
    from segment_anything import SamAutomaticMaskGenerator

    from zsplg_fast.labeling.masks import upstream_sam2_generator

    make = {
        "sam": lambda: SamAutomaticMaskGenerator(models.sam, output_mode="binary_mask", **dict(amg)),
        "sam2": lambda: upstream_sam2_generator(models.sam, AmgConfig(**dict(amg))),
    }
    return make[models.family]()


def proposer_for(models: Models, cfg: AmgConfig) -> Any:
    """Our generator's proposer for the models' family (SAM 2: dynamic multimask settings of the model)."""
    from zsplg_fast.labeling.proposers import make_proposer

    meta = None
    if models.family == "sam2":
        from dataclasses import asdict

        from zsplg_fast.models.sam2 import sam2_info

        meta = asdict(sam2_info(models.sam))
    return make_proposer(models.family, cfg, meta)


def _timed(stages: dict[str, float], name: str, sync: Callable[[], None]) -> Any:
    class _T:
        def __enter__(self) -> None:
            sync()
            self.t0 = time.perf_counter()

        def __exit__(self, *exc: object) -> None:
            sync()
            stages[name] = stages.get(name, 0.0) + time.perf_counter() - self.t0

    return _T()


def _sync_for(device: torch.device) -> Callable[[], None]:
    if device.type == "cuda":
        return lambda: torch.cuda.synchronize(device)
    return lambda: None


class UpstreamPipeline:
    """A: ``SamAutomaticMaskGenerator`` (binary masks) + eager DenseClip + ``pool_masks``.

    ``amg`` holds upstream's keyword arguments (AmgConfig fields). The encoder time (``set_image``) is
    reported apart from the rest of AMG.
    """

    def __init__(
        self, models: Models, amg: Mapping[str, Any], device: str = "cpu", autocast: str = "fp32"
    ) -> None:
        self.device = torch.device(device)
        self.models = models
        models.sam.to(self.device)
        models.dense.to(self.device)
        self.gen = _upstream_generator(models, amg)
        self.autocast = autocast
        self.stages: dict[str, float] = {}
        predictor = self.gen.predictor
        original = predictor.set_image
        sync = _sync_for(self.device)

        def timed_set_image(*a: Any, **k: Any) -> None:
            with _timed(self.stages, "encoder", sync):
                original(*a, **k)

        predictor.set_image = timed_set_image  # type: ignore[method-assign]
        self._set_image = original

    @torch.inference_mode()
    def warm_up(self, image: np.ndarray, calls: int = 2) -> None:
        """Untimed: the image encoder (``set_image``) and dense CLIP on ``image``, ``calls`` times, as the
        engine pipelines are warmed (their first calls pay lazy initialisation and first-touch memory);
        the point decoding has no such cost worth a full AMG call."""
        clip = self.models.clip
        for _ in range(calls):
            with self._autocast():
                self._set_image(image)
                self.models.dense(
                    clip_preprocess(image, self.models.clip_size, clip.mean, clip.std, self.device)
                )
        _sync_for(self.device)()

    def _autocast(self) -> Any:
        from contextlib import nullcontext

        dt = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.autocast)
        return torch.autocast(self.device.type, dtype=dt) if dt else nullcontext()

    @torch.inference_mode()
    def __call__(self, image: np.ndarray) -> PipelineResult:
        self.stages = {}
        sync = _sync_for(self.device)
        t0 = time.perf_counter()
        with self._autocast():
            records = self.gen.generate(image)
        sync()
        self.stages["amg_other"] = time.perf_counter() - t0 - self.stages.get("encoder", 0.0)
        masks = MaskSet.from_records(records, image.shape[:2]).masks
        clip = self.models.clip
        with _timed(self.stages, "clip", sync), self._autocast():
            x = clip_preprocess(image, self.models.clip_size, clip.mean, clip.std, self.device)
            feats = self.models.dense(x)[0].float()
        with _timed(self.stages, "pool", sync):
            pooled = pool_masks(masks.to(self.device), feats)
        return PipelineResult(masks, pooled.cpu(), feats.cpu(), dict(self.stages))


class EnginePipeline:
    """B/C/D/E: our MaskGenerator on engines + a ``clip_dense`` engine + ``pool_masks``.
    ``decoder_image``: the ``sam_decoder_image`` engine when ``decoder`` is ``sam_decoder_shared``."""

    def __init__(
        self,
        encoder: Any,
        decoder: Any,
        clip_dense: Any,
        decoder_image: Any,
        models: Models,
        cfg: AmgConfig,
        **amg: Any,
    ) -> None:
        amg = {"sync_timings": True, "proposer": proposer_for(models, cfg), **amg}  # device stage times
        self.gen = MaskGenerator(
            encoder, decoder, cfg, decoder_image=decoder_image, mask_threshold=cfg.mask_threshold, **amg
        )
        self.models = models
        self.device = self.gen.device
        self.dense = dense_from_engine(clip_dense, self.device)

    @torch.inference_mode()
    def __call__(self, image: np.ndarray) -> PipelineResult:
        sync = _sync_for(self.device)
        result = self.gen.generate_tensors(image)
        stages = dict(self.gen.timings)
        clip = self.models.clip
        with _timed(stages, "clip", sync):
            x = clip_preprocess(image, self.models.clip_size, clip.mean, clip.std, self.device)
            feats = self.dense(x)[0]
        with _timed(stages, "pool", sync):
            pooled = pool_masks(result.masks, feats)
        return PipelineResult(result.masks.cpu(), pooled.cpu(), feats.cpu(), stages)


def torch_engines(
    models: Models, device: str = "cpu", autocast: str = "fp32", compile: bool = False, shared: bool = True
) -> tuple[Any, Any, Any, Any]:
    """(sam_encoder, decoder, clip_dense, sam_decoder_image) TorchEngines from the export specs' modules:
    decoder ``sam_decoder_shared`` with its image engine, or (``shared=False``) the one-piece
    ``sam_decoder_batched`` and None."""
    from zsplg_fast.engines.torch_engine import TorchEngine
    from zsplg_fast.export.specs import get_spec

    names = BENCH_SPECS[models.family]
    shared = shared and names.decoder_image is not None
    preps = [
        get_spec(names.encoder).bind(models.sam, validation_batches=(1,)),
        get_spec(names.decoder if shared else names.one_piece).bind(models.sam),
        get_spec("clip_dense").bind(models.clip, **clip_options(models)),
    ]
    if shared:
        preps.append(get_spec(str(names.decoder_image)).bind(models.sam))
    engines = [
        TorchEngine(
            p.module, p.inputs, p.outputs, device=device, autocast=autocast, compile=compile, name=p.name
        )
        for p in preps
    ]
    return engines[0], engines[1], engines[2], (engines[3] if shared else None)


def clip_options(models: Models) -> dict[str, Any]:
    d = models.dense
    return {
        "image_size": models.clip_size,
        "gem_depth": d.gem_depth,
        "gem_temperature": d.gem_temperature,
        "gem_iters": d.gem_iters,
        "validation_batches": (1, 3),
    }


def ort_engines(
    paths: Mapping[str, Path],
    suffix: str = "",
    threads: int | None = None,
    cpu_arena: bool = False,
    decoder_arena: bool = True,
    family: str = "sam",
) -> tuple[Any, Any, Any, Any]:
    """(sam_encoder, sam_decoder_shared, clip_dense, sam_decoder_image) OrtEngines on the CPU provider.

    ``cpu_arena=False`` builds the encoder and CLIP sessions without onnxruntime's CPU memory arena:
    its power-of-two growth plus vit_b's 805 MB global-attention buffers took one worker to 12.5 GB and
    an OOM kill on a shared 24 GB host; without it memory goes back to the allocator between runs. The
    decoder sessions keep the arena (``decoder_arena``, as ``label`` runs them: onnxruntime's default):
    their activations are small (4 prompts: 16 MiB) and reusing them ran vit_b's shared decoder 1.15x
    faster per prompt (167 vs 186-214 ms at 4 prompts, alternated, one loaded 2-core run).
    """
    from zsplg_fast.engines.ort import OrtEngine

    spec = BENCH_SPECS[family]
    names = (spec.encoder, spec.decoder, "clip_dense", spec.decoder_image)
    engines: list[Any] = []
    for n in names:
        if n is None:  # SAM 2: no separate per-image decoder engine
            engines.append(None)
            continue
        arena = decoder_arena if n.startswith(("sam_decoder", "sam2_decoder")) else cpu_arena
        opts = {"enable_cpu_mem_arena": arena}
        engines.append(OrtEngine(paths[n + suffix], intra_op_threads=threads, session_options=opts))
    return tuple(engines)  # type: ignore[return-value]


def best_iou(ref: torch.Tensor, ours: torch.Tensor) -> float:
    """Mean over ``ref`` masks (K, H, W) bool of the best IoU with any of ``ours`` (two empty masks: 1)."""
    if len(ref) == 0:
        return 1.0 if len(ours) == 0 else 0.0
    if len(ours) == 0:
        return 0.0
    a, b = ref.flatten(1).float(), ours.flatten(1).float()
    best = []
    for i in range(0, len(a), 256):
        inter = a[i : i + 256] @ b.T
        union = a[i : i + 256].sum(1, keepdim=True) + b.sum(1)[None] - inter
        iou = torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(inter))
        best.append(iou.max(1).values)
    return float(torch.cat(best).mean())


def fidelity(ref: PipelineResult, ours: PipelineResult) -> dict[str, float]:
    """Mask fidelity of ``ours`` to ``ref``: mean best IoU (both ways), count ratio, feature cosine."""
    cos = torch.nn.functional.cosine_similarity(ref.features.flatten(1), ours.features.flatten(1), dim=0)
    return {
        "mean_best_iou": round(best_iou(ref.masks, ours.masks), 5),
        "mean_best_iou_reverse": round(best_iou(ours.masks, ref.masks), 5),
        "masks_ref": len(ref.masks),
        "masks_ours": len(ours.masks),
        "count_ratio": round(len(ours.masks) / max(1, len(ref.masks)), 4),
        "clip_feature_cosine_min": round(float(cos.min()), 6),
    }
