"""AMG's candidate filter in two parts: a fused, static-shape part per decoder batch, and one
data-dependent resolution per crop.

Upstream's ``SamAutomaticMaskGenerator._process_batch`` (which we followed for the filter order)
upsamples every candidate, then keeps those with predicted IoU > ``pred_iou_thresh``, full-resolution
stability ≥ ``stability_score_thresh`` and a box off the crop edges. Here:

- :func:`filter_flags` (per batch, on the low-res logits, any float dtype) marks each candidate:
  ``ok`` = IoU head passes and the stability bounds (``amg_lowres.stability_bounds``) do not rule it
  out; ``unsure`` = the bounds straddle the threshold (the exact full-resolution score decides);
  ``boxes`` from thin bands (``amg_lowres.exact_boxes_pending``) and ``redo`` where a band missed.
  No host synchronisation, no data-dependent shape: the function compiles (``torch.compile``) and
  the decoder loop never waits for the device.
- :func:`resolve` (per crop, after the last batch): upsamples only the ``unsure``/``redo`` survivors,
  exactly as upstream, drops boxes near a crop edge and compacts — the only host syncs of the crop.

Exactness: the IoU test is upstream's on the same predictions; a candidate is dropped by the bounds
only when its full-resolution stability is surely below the threshold, and every uncertain one gets
upstream's own full-resolution score. So no candidate upstream keeps is dropped.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import torch

from zsplg_fast.labeling import amg_ops as ops
from zsplg_fast.labeling.amg_lowres import exact_boxes_pending, stability_bounds


@dataclass(frozen=True)
class CropGeometry:
    """Where a crop's logits land: ``input_hw`` unpadded S-frame size, ``crop_hw`` crop size in image
    pixels, ``ratio`` S-frame pixels per low-res cell (4 for SAM), ``full_low`` uncut low-res (h, w)."""

    input_hw: tuple[int, int]
    crop_hw: tuple[int, int]
    ratio: int
    full_low: tuple[int, int]

    @property
    def cut(self) -> tuple[int, int]:
        """Low-res rows/columns that reach the valid region (+1 for the bilinear neighbour)."""
        return (
            min(self.full_low[0], math.ceil(self.input_hw[0] / self.ratio) + 1),
            min(self.full_low[1], math.ceil(self.input_hw[1] / self.ratio) + 1),
        )


@dataclass(frozen=True)
class FilterParams:
    """Upstream's thresholds: ``pred_iou``, ``stability``, ``offset`` (stability score offset), and
    ``mask_threshold`` (logit cut-off of a mask)."""

    pred_iou: float
    stability: float
    offset: float
    mask_threshold: float = 0.0


@dataclass
class Pending:
    """Candidates of a crop before resolution (M rows each): ``low`` (M, h, w) cut logits, ``iou`` (M,),
    ``points`` (M, 2) float64 crop frame, ``ok``/``unsure``/``redo`` (M,) bool, ``boxes`` (M, 4) int64."""

    low: torch.Tensor
    iou: torch.Tensor
    points: torch.Tensor
    ok: torch.Tensor
    unsure: torch.Tensor
    boxes: torch.Tensor
    redo: torch.Tensor

    def select(self, idx: torch.Tensor) -> Pending:
        return Pending(*(getattr(self, f.name)[idx] for f in fields(self)))

    @staticmethod
    def cat(parts: list[Pending]) -> Pending:
        if len(parts) == 1:
            return parts[0]
        return Pending(*(torch.cat([getattr(p, f.name) for p in parts]) for f in fields(Pending)))


def filter_flags(
    low: torch.Tensor, iou: torch.Tensor, geom: CropGeometry, params: FilterParams, chunk: int = 1024
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The fused per-batch filter: static shapes, no host sync (compilable).

    Args:
        low: (M, h4, w4) mask logits (float32/bf16/fp16), uncut; iou: (M,) predicted IoU.
        chunk: masks per band evaluation of the boxes (bounds memory).

    Returns:
        cut logits (M, h, w) (valid region + one row/column), ok (M,) bool, unsure (M,) bool,
        boxes (M, 4) int64 crop-frame XYXY (inclusive max; valid where not ``redo``), redo (M,) bool.
    """
    rows, cols = geom.cut
    low = low[:, :rows, :cols]
    ok = iou > params.pred_iou if params.pred_iou > 0.0 else torch.ones_like(iou, dtype=torch.bool)
    if params.stability > 0.0:
        lower, upper = stability_bounds(
            low, geom.input_hw, geom.crop_hw, geom.ratio, params.mask_threshold, params.offset
        )
        sure = lower >= params.stability
        unsure = ~sure & (upper >= params.stability)
        ok = ok & (sure | unsure)
    else:
        unsure = torch.zeros_like(ok)
    boxes, redo = exact_boxes_pending(
        low, geom.input_hw, geom.crop_hw, geom.ratio, geom.full_low, params.mask_threshold, chunk=chunk
    )
    return low, ok, unsure, boxes, redo


def _chunk_rows(n: int, hw: tuple[int, int], device: torch.device) -> int:
    """Masks per full-resolution chunk: ~64 MiB of float32 logits on CPU, ~1 GiB on CUDA."""
    budget = (1 << 30) if device.type == "cuda" else (64 << 20)
    return max(1, min(n, budget // max(1, 4 * hw[0] * hw[1])))


def full_scores(
    low: torch.Tensor, geom: CropGeometry, params: FilterParams, with_boxes: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """Upstream's full-resolution stability (M,) float32 and XYXY boxes (M, 4) int64 (zeros unless
    ``with_boxes``), upsampling chunk by chunk."""
    stab = torch.empty(len(low), dtype=torch.float32, device=low.device)
    boxes = torch.zeros((len(low), 4), dtype=torch.int64, device=low.device)
    step = _chunk_rows(len(low), geom.crop_hw, low.device)
    for i in range(0, len(low), step):
        full = ops.upsample_logits(low[i : i + step].float(), geom.input_hw, geom.crop_hw, geom.ratio)
        stab[i : i + step] = ops.stability_score(full, params.mask_threshold, params.offset)
        if with_boxes:
            boxes[i : i + step] = ops.masks_to_boxes(full > params.mask_threshold)
    return stab, boxes


def resolve(
    p: Pending, geom: CropGeometry, params: FilterParams, crop_box: list[int], orig_hw: tuple[int, int]
) -> tuple[Pending, int]:
    """Decide the uncertain candidates at full resolution, drop boxes near crop edges, compact.

    Returns the kept candidates (``ok`` all True) and how many stability scores were upsampled to decide.
    """
    need = torch.nonzero(p.ok & (p.unsure | p.redo)).flatten()  # the crop's one data-dependent sync
    n_unsure = 0
    if len(need):
        stab, boxes = full_scores(p.low[need], geom, params)
        unsure = p.unsure[need]
        n_unsure = int(unsure.sum())
        p.ok[need] = p.ok[need] & (~unsure | (stab >= params.stability))
        p.boxes[need] = torch.where(p.redo[need, None], boxes, p.boxes[need])
    near = ops.near_crop_edge(p.boxes, crop_box, [0, 0, orig_hw[1], orig_hw[0]])
    keep = torch.nonzero(p.ok & ~near).flatten()
    out = p.select(keep)
    out.low = out.low.contiguous()
    return out, n_unsure


def filter_full_res(
    low: torch.Tensor, iou: torch.Tensor, points: torch.Tensor, geom: CropGeometry, params: FilterParams
) -> Pending:
    """The reference filter: every IoU survivor upsampled in full, decisions as upstream takes them."""
    rows, cols = geom.cut
    if params.pred_iou > 0.0:
        keep = iou > params.pred_iou
        low, iou, points = low[keep], iou[keep], points[keep]
    low = low[:, :rows, :cols]
    stab, boxes = full_scores(low, geom, params)
    ok = stab >= params.stability if params.stability > 0.0 else torch.ones_like(iou, dtype=torch.bool)
    no = torch.zeros_like(ok)
    return Pending(low, iou, points, ok, no, boxes, no.clone())


def compact(
    low: torch.Tensor, iou: torch.Tensor, points: torch.Tensor, keep: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Rows of (low, iou, points) where ``keep`` (host sync: used where syncs are free, on CPUs)."""
    idx = torch.nonzero(keep).flatten()
    return low[idx], iou[idx], points[idx]


def filter_compacting(
    low: torch.Tensor,
    iou: torch.Tensor,
    points: torch.Tensor,
    geom: CropGeometry,
    params: FilterParams,
    chunk: int = 64,
) -> Pending:
    """:func:`filter_flags`' decisions, compacting after each test so later tests see fewer candidates
    (host syncs are free on CPUs, the work saved is not). Same ``Pending`` as the fused filter's rows
    that are ``ok``."""
    rows, cols = geom.cut
    if params.pred_iou > 0.0:
        low, iou, points = compact(low, iou, points, iou > params.pred_iou)
    low = low[:, :rows, :cols]
    unsure = torch.zeros(len(low), dtype=torch.bool, device=low.device)
    if params.stability > 0.0 and len(low):
        lower, upper = stability_bounds(
            low, geom.input_hw, geom.crop_hw, geom.ratio, params.mask_threshold, params.offset
        )
        sure = lower >= params.stability
        unsure = ~sure & (upper >= params.stability)
        idx = torch.nonzero(sure | unsure).flatten()
        low, iou, points, unsure = low[idx], iou[idx], points[idx], unsure[idx]
    boxes, redo = exact_boxes_pending(
        low, geom.input_hw, geom.crop_hw, geom.ratio, geom.full_low, params.mask_threshold, chunk=chunk
    )
    return Pending(low, iou, points, torch.ones_like(unsure), unsure, boxes, redo)
