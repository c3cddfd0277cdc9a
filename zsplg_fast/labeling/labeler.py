"""One image through the recipe: masks → classes → label map."""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from zsplg_fast.errors import ConfigError
from zsplg_fast.labeling.amg_prepare import PreparedImage
from zsplg_fast.labeling.classify import Classification, MaskClassifier
from zsplg_fast.labeling.degenerate import DegenerateWatch
from zsplg_fast.labeling.masks import MaskSet, MaskSource
from zsplg_fast.labeling.paint import paint

log = logging.getLogger(__name__)

# Messages of allocation failures: torch (CUDA and CPU), onnxruntime, TensorRT / CUDA runtime.
OOM_MARKERS = ("out of memory", "failed to allocate memory", "cuda_error_out_of_memory", "bad_alloc")
DEFAULT_PROMPT_BATCH = 64
DEFAULT_WORK_LONG_SIDE = 2048  # label.work_long_side: masks and classes at most this long side


def is_out_of_memory(err: BaseException) -> bool:
    """True for an allocation failure on any backend (torch, onnxruntime, TensorRT)."""
    if isinstance(err, (MemoryError, torch.cuda.OutOfMemoryError)):
        return True
    return any(m in str(err).lower() for m in OOM_MARKERS)


def masks_with_oom_retry(
    source: MaskSource, image: np.ndarray | None, run: Callable[[], MaskSet] | None = None
) -> tuple[MaskSet, int]:
    """Run ``source(image)`` (or ``run()``); on out-of-memory halve ``source.prompt_batch`` and retry.

    Returns (masks, number of halvings). The halved batch is kept for the next images; with an
    automatic batch (``prompt_batch`` None) the halving starts from the one the source last used
    (``batch_used``), else from ``DEFAULT_PROMPT_BATCH``. Raises the last error when the batch is
    already 1 or the source has no prompt batch to shrink.
    """
    halvings = 0
    call = run if run is not None else (lambda: source(image))  # type: ignore[arg-type]
    while True:
        try:
            return call(), halvings
        except Exception as e:
            current = getattr(source, "prompt_batch", None)
            if not is_out_of_memory(e) or not hasattr(source, "prompt_batch") or current == 1:
                raise
            used = current or getattr(source, "batch_used", None) or DEFAULT_PROMPT_BATCH
            new = max(1, used // 2)
            log.warning("out of memory at prompt batch %s; retrying with %d", current or "auto", new)
            source.prompt_batch = new
            halvings += 1
            if torch.cuda.is_available():
                torch.cuda.empty_cache()


def to_working(image: np.ndarray, long_side: int) -> np.ndarray:
    """(H, W, 3) uint8 → the image with its long side capped at ``long_side`` (area resampling), or the
    image itself when it is small enough or ``long_side`` is 0 (off). SAM and CLIP see ~1024 / 448 px
    anyway; only the final label needs the display size."""
    h, w = image.shape[:2]
    if long_side <= 0 or max(h, w) <= long_side:
        return image
    import cv2

    s = long_side / max(h, w)
    size = (max(1, round(w * s)), max(1, round(h * s)))  # cv2 takes (width, height)
    return cv2.resize(np.ascontiguousarray(image), size, interpolation=cv2.INTER_AREA)


def to_display(label: np.ndarray, hw: tuple[int, ...]) -> np.ndarray:
    """(h, w) uint8 label → (H, W) by nearest neighbour (class indices are never blended)."""
    if tuple(label.shape[:2]) == tuple(hw[:2]):
        return label
    import cv2

    return cv2.resize(label, (int(hw[1]), int(hw[0])), interpolation=cv2.INTER_NEAREST)


@dataclass
class PreparedLabel:
    """An image made ready on a CPU worker thread (:meth:`ZeroShotLabeler.prepare`): ``hw`` its (H, W),
    ``work`` the (h, w, 3) uint8 working image, ``crops`` its SAM crops resized for the encoder (None when
    the mask source has no CPU half, e.g. upstream's generator)."""

    hw: tuple[int, int]
    work: np.ndarray
    crops: PreparedImage | None = None
    seconds: float = 0.0


@dataclass
class Started:
    """An image handed to :meth:`ZeroShotLabeler.start`: its encoder launched (``encoded``, when the mask
    source overlaps), or the error the launch raised (reported by :meth:`ZeroShotLabeler.finish`)."""

    prepared: PreparedLabel
    encoded: Any = None
    error: BaseException | None = None
    seconds: float = 0.0


@dataclass
class LabelResult:
    """``label``: (H, W) uint8 in {0..C-1, 255}; ``meta``: JSON-able per-image record."""

    label: np.ndarray
    meta: dict[str, Any] = field(default_factory=dict)


class ZeroShotLabeler:
    """SAM masks named by dense CLIP features, painted large → small.

    Args:
        masks: a MaskSource (upstream reference or the fast engine-based generator).
        classifier: a MaskClassifier holding the class-prompt embeddings.
        uncovered: ``"background"`` or ``"ignore"`` for pixels that no mask covers.
        work_long_side: masks, classes and painting run on the image with its long side capped here
            (0 = full resolution); the label is upsampled once (nearest) to the image's size.
        check_first: warn (log) when the first N labels are degenerate (0 = no check).
    """

    def __init__(
        self,
        masks: MaskSource,
        classifier: MaskClassifier,
        uncovered: str = "background",
        work_long_side: int = DEFAULT_WORK_LONG_SIDE,
        check_first: int = 5,
    ) -> None:
        self.masks = masks
        self.classifier = classifier
        self.uncovered = uncovered
        self.work_long_side = work_long_side
        self.watch = DegenerateWatch(check_first)

    def __call__(self, image: np.ndarray) -> LabelResult:
        """(H, W, 3) uint8 RGB → LabelResult with timings (seconds) per stage in ``meta``."""
        return self.finish(self.start(self.prepare(image)))

    def prepare(self, image: np.ndarray) -> PreparedLabel:
        """The CPU half: the working image and the mask source's resized crops. Thread-safe (the job runs
        it in its decode workers, off the thread that drives the GPU)."""
        t0 = time.perf_counter()
        work = to_working(image, self.work_long_side)
        cpu_half = getattr(self.masks, "prepare", None)
        crops = cpu_half(work) if cpu_half is not None else None
        hw = (int(image.shape[0]), int(image.shape[1]))
        return PreparedLabel(hw, work, crops, time.perf_counter() - t0)

    def start(self, prepared: PreparedLabel) -> Started:
        """Launch the encoder of ``prepared`` when the mask source overlaps it with the previous image's
        decoding (CUDA: a second stream); otherwise nothing runs until :meth:`finish`. Never raises: an
        error is kept for :meth:`finish` (the image it belongs to)."""
        ahead = getattr(self.masks, "encode_ahead", None)
        if prepared.crops is None or ahead is None or not getattr(self.masks, "overlap", False):
            return Started(prepared)
        t0 = time.perf_counter()
        try:
            return Started(prepared, ahead(prepared.crops), None, time.perf_counter() - t0)
        except Exception as e:  # the next image's error: reported when that image is finished
            return Started(prepared, None, e, time.perf_counter() - t0)

    def finish(self, started: Started) -> LabelResult:
        """Masks (the decoder etc. on the current stream), classes and the label of a started image. The
        out-of-memory retry halves the prompt batch and keeps the launched embedding."""
        t0 = time.perf_counter()
        p, ms = started.prepared, self.masks
        if started.error is not None and not is_out_of_memory(started.error):
            raise started.error
        run: Callable[[], MaskSet] | None = None  # None: the source's own call on the working image
        if started.encoded is not None:
            run = functools.partial(_finish_encoded, ms, started.encoded)
        elif p.crops is not None and hasattr(ms, "generate_prepared"):
            run = functools.partial(_generate_prepared, ms, p.crops)
        masks, halvings = masks_with_oom_retry(ms, p.work, run)
        t_masks = p.seconds + started.seconds + time.perf_counter() - t0
        return self._finish(p.hw, p.work, masks, halvings, t_masks)

    def label_batch(
        self, images: list[np.ndarray], prepared: list[PreparedLabel] | None = None
    ) -> list[LabelResult]:
        """Several images; the encoder sees them in one batch when the mask source supports it.

        ``prepared``: the images' :meth:`prepare` (done in the job's decode workers); None = here.
        Falls back to one image at a time (with the out-of-memory retry) if the batch does not fit.
        """
        gen = getattr(self.masks, "generate_prepared", None)
        if gen is None or len(images) < 2:
            return [self.finish(self.start(p)) for p in prepared] if prepared else [self(i) for i in images]
        t0 = time.perf_counter()
        preps = prepared if prepared is not None else [self.prepare(im) for im in images]
        try:
            sets = [r.to_maskset() for r in gen([p.crops for p in preps])]
        except Exception as e:
            if not is_out_of_memory(e):
                raise
            log.warning("out of memory on a batch of %d images; labeling them one by one", len(images))
            return [self.finish(Started(p)) for p in preps]
        share = (time.perf_counter() - t0) / len(images)
        return [
            self._finish(p.hw, p.work, ms, 0, share + p.seconds) for p, ms in zip(preps, sets, strict=True)
        ]

    def label_prepared(self, prepared: list[PreparedImage], clip_inputs: torch.Tensor) -> list[LabelResult]:
        """Images decoded and pre-processed on the CPU (the Ray GPU stage): one encoder batch over all
        their crops, one dense-CLIP batch, the decoder per image. Same labels as :meth:`__call__`.

        Args:
            prepared: per image, its crops resized for SAM (``amg_prepare.prepare_image``), made from the
                image at the working resolution (``to_working``); ``display_hw`` is the image's own size.
            clip_inputs: (B, 3, S, S) float32 from ``classify.clip_preprocess``, one row per image.
        """
        gen = getattr(self.masks, "generate_prepared", None)
        if gen is None:
            raise ConfigError("label.masks", "upstream", "has no pre-processed path", valid="fast")
        t0 = time.perf_counter()
        sets = [r.to_maskset() for r in gen(prepared)]
        t1 = time.perf_counter()
        feats = self.classifier.features_batch(clip_inputs)
        share = (time.perf_counter() - t1) / len(prepared)
        t_masks = (t1 - t0) / len(prepared)
        return [
            self._finish(p.display_hw or p.hw, p.hw, ms, 0, t_masks, feats[i], share)
            for i, (p, ms) in enumerate(zip(prepared, sets, strict=True))
        ]

    def _finish(
        self,
        display_hw: tuple[int, ...],
        work: np.ndarray | tuple[int, int],
        ms: MaskSet,
        halvings: int,
        t_masks: float,
        feats: torch.Tensor | None = None,
        t_feats: float = 0.0,
    ) -> LabelResult:
        """Classify and paint at the working resolution (``work``: the working image, or its (h, w) when
        ``feats`` are given); upsample the label once (nearest) to ``display_hw``. Mask areas, boxes and
        RLEs in ``meta`` are in working pixels (``meta["work_size"]``)."""
        t1 = time.perf_counter() - t_feats
        work_hw = work if isinstance(work, tuple) else work.shape[:2]
        if feats is None:
            feats = self.classifier.features(work)
        cls = self.classifier.classify(ms.masks, feats)
        t2 = time.perf_counter()
        label = to_display(paint(ms.masks, cls.classes, self.uncovered), display_hw)
        t3 = time.perf_counter()
        review = review_fields(ms.masks, cls)
        self.watch.add(label, len(ms))
        meta = {
            "height": int(display_hw[0]),
            "width": int(display_hw[1]),
            "work_size": [int(work_hw[0]), int(work_hw[1])],
            "num_masks": len(ms),
            "oom_halvings": halvings,
            "uncovered_fraction": review["uncovered_fraction"],
            "masks": [
                {
                    "class": int(c),
                    "best_class": int(b),
                    "score": round(float(s), 5),
                    "cosine": round(float(co), 5),
                    "area": int(a),
                    "predicted_iou": round(float(p), 5),
                    "stability": round(float(st), 5),
                    "bbox_xywh": [round(float(v), 1) for v in box],
                    "margin": mg,
                    "rle": rle,
                }
                for c, b, s, co, a, p, st, box, mg, rle in zip(
                    cls.classes.tolist(),
                    cls.best.tolist(),
                    cls.scores.tolist(),
                    cls.cosine.tolist(),
                    ms.masks.flatten(1).sum(1).tolist(),
                    ms.predicted_iou.tolist(),
                    ms.stability.tolist(),
                    ms.boxes.tolist(),
                    review["margins"],
                    review["rles"],
                    strict=True,
                )
            ],
            "timings_s": {
                "masks": round(t_masks, 4),
                "classify": round(t2 - t1, 4),
                "paint": round(t3 - t2, 4),
            },
        }
        return LabelResult(label, meta)


def _finish_encoded(source: Any, encoded: Any) -> MaskSet:
    return source.finish_encoded(encoded).to_maskset()


def _generate_prepared(source: Any, crops: PreparedImage) -> MaskSet:
    return source.generate_prepared([crops])[0].to_maskset()


def review_fields(masks: torch.Tensor, cls: Classification) -> dict[str, Any]:
    """What the review loop (``zsplg_fast.review``) reads from meta, cheap to keep here.

    Args:
        masks: (K, H, W) bool at image resolution.
        cls: the masks' classification (``margin`` may be None for older classifiers).

    Returns:
        ``uncovered_fraction``: share of pixels no mask covers, in [0, 1]; ``margins``: K floats, top-1
        minus top-2 softmax probability (None when unknown); ``rles``: K COCO RLEs (``utils.rle.encode``:
        byte-equal to pycocotools, computed on the masks' device; ``counts`` as str) of the full SAM masks.
    """
    from zsplg_fast.utils.rle import encode

    k, h, w = masks.shape
    margins = [round(float(m), 5) for m in cls.margin.tolist()] if cls.margin is not None else [None] * k
    rles = encode(masks)  # on the masks' device (GPU RLE), byte-equal to pycocotools
    covered = float(masks.any(dim=0).sum()) if k else 0.0
    return {"uncovered_fraction": round(1.0 - covered / max(1, h * w), 6), "margins": margins, "rles": rles}
