"""AMG results: the tensor form, upstream's record format, RLE encodings and small-region cleanup.

Record keys, value types and encodings follow segment-anything's ``SamAutomaticMaskGenerator.generate``
(``segmentation``, ``area``, ``bbox`` XYWH, ``predicted_iou``, ``point_coords``, ``stability_score``,
``crop_box`` XYWH); small-region removal follows ``utils/amg.py remove_small_regions`` (OpenCV).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from zsplg_fast.errors import MissingDependencyError
from zsplg_fast.labeling.masks import MaskSet
from zsplg_fast.utils import rle


@dataclass
class AmgMasks:
    """Masks of one image, K rows everywhere, all on the generator's device.

    ``masks``: (K, H, W) bool; ``iou_preds``: (K,) float32 predicted IoU; ``stability``: (K,) float32
    in [0, 1] (nan when the mask is empty at both cut-offs); ``boxes``: (K, 4) int64 XYXY, inclusive max;
    ``points``: (K, 2) float64 (x, y) prompt in image pixels; ``crop_boxes``: (K, 4) int64 XYXY.
    """

    masks: torch.Tensor
    iou_preds: torch.Tensor
    stability: torch.Tensor
    boxes: torch.Tensor
    points: torch.Tensor
    crop_boxes: torch.Tensor

    def __len__(self) -> int:
        return int(self.masks.shape[0])

    def select(self, keep: torch.Tensor) -> AmgMasks:
        """Rows ``keep`` (indices or bool) of every field, in that order."""
        return AmgMasks(*(getattr(self, f)[keep.to(getattr(self, f).device)] for f in _FIELDS))

    def to_maskset(self) -> MaskSet:
        """The labeling job's MaskSet (boxes as float32 XYWH, as upstream's ``bbox``)."""
        xywh = xyxy_to_xywh(self.boxes).float()
        return MaskSet(self.masks, self.iou_preds.float(), self.stability.float(), xywh)


_FIELDS = ("masks", "iou_preds", "stability", "boxes", "points", "crop_boxes")


def xyxy_to_xywh(boxes: torch.Tensor) -> torch.Tensor:
    """(K, 4) XYXY → XYWH with w = x1 − x0, h = y1 − y0 (as amg.box_xyxy_to_xywh; no +1)."""
    out = boxes.clone()
    out[:, 2:] = boxes[:, 2:] - boxes[:, :2]
    return out


def _binary(masks: np.ndarray) -> list[Any]:
    return list(masks)


def uncompressed_rle(masks: np.ndarray) -> list[dict[str, Any]]:
    """(K, H, W) bool → uncompressed RLEs ``{"size": [H, W], "counts": [...]}``, column-major runs
    starting with a (possibly zero) run of 0s (the format of amg.mask_to_rle_pytorch)."""
    k, h, w = masks.shape
    flat = masks.transpose(0, 2, 1).reshape(k, h * w)  # Fortran order per mask
    out = []
    for m in flat:
        change = np.flatnonzero(m[1:] != m[:-1]) + 1
        bounds = np.concatenate([[0], change, [h * w]])
        counts = np.diff(bounds).tolist()
        if m.size and m[0]:
            counts = [0, *counts]
        out.append({"size": [h, w], "counts": counts})
    return out


def coco_rle(masks: np.ndarray) -> list[dict[str, Any]]:
    """(K, H, W) bool → COCO compressed RLEs with ``counts`` as str (pycocotools, JSON-ready)."""
    from pycocotools import mask as mask_utils

    if len(masks) == 0:
        return []
    rles = mask_utils.encode(np.asfortranarray(masks.transpose(1, 2, 0).astype(np.uint8)))
    for r in rles:
        r["counts"] = r["counts"].decode("utf-8")
    return list(rles)


OUTPUT_MODES: dict[str, Callable[[torch.Tensor], list[Any]]] = {
    "binary_mask": lambda masks: _binary(masks.cpu().numpy()),
    "uncompressed_rle": rle.encode_uncompressed,  # on the masks' device (GPU RLE)
    "coco_rle": rle.encode,
}
"""Output mode → (K, H, W) bool masks on their device → one segmentation per mask. The numpy encoders
above (``uncompressed_rle``, ``coco_rle``) are the references the torch ones are tested against."""
"""Output mode → encoder of (K, H, W) bool masks into per-mask ``segmentation`` values."""


def to_records(result: AmgMasks, output_mode: str) -> list[dict[str, Any]]:
    """Upstream-format records (one dict per mask, in ``result``'s order)."""
    segs = OUTPUT_MODES[output_mode](result.masks)
    areas = result.masks.flatten(1).sum(1).cpu().tolist() if len(result.masks) else []
    bbox = xyxy_to_xywh(result.boxes).cpu().tolist()
    crops = xyxy_to_xywh(result.crop_boxes).cpu().tolist()
    iou = result.iou_preds.float().cpu().tolist()
    stab = result.stability.float().cpu().tolist()
    pts = result.points.cpu().tolist()
    return [
        {
            "segmentation": segs[i],
            "area": int(areas[i]),
            "bbox": bbox[i],
            "predicted_iou": iou[i],
            "point_coords": [pts[i]],
            "stability_score": stab[i],
            "crop_box": crops[i],
        }
        for i in range(len(segs))
    ]


def remove_small_regions(mask: np.ndarray, area_thresh: float, mode: str) -> tuple[np.ndarray, bool]:
    """Fill holes (``mode="holes"``) or drop islands (``"islands"``) smaller than ``area_thresh`` pixels.

    ``mask``: (H, W) bool. Returns the new mask and whether it changed. 8-connectivity; if every
    island is small, the largest is kept (follows amg.remove_small_regions).
    """
    try:
        import cv2
    except ImportError as e:
        raise MissingDependencyError(
            "opencv-python-headless", "min_mask_region_area > 0", "pip install opencv-python-headless"
        ) from e
    holes = mode == "holes"
    work = (mask ^ holes).astype(np.uint8)
    n_labels, regions, stats, _ = cv2.connectedComponentsWithStats(work, 8)
    sizes = stats[1:, cv2.CC_STAT_AREA]
    small = np.flatnonzero(sizes < area_thresh) + 1
    if len(small) == 0:
        return mask, False
    fill = np.concatenate([[0], small])
    if not holes:
        fill = np.setdiff1d(np.arange(n_labels), fill)
        if len(fill) == 0:
            fill = np.array([int(np.argmax(sizes)) + 1])
    return np.isin(regions, fill), True


def cat_crops(parts: list[AmgMasks], device: torch.device, hw: tuple[int, int]) -> AmgMasks:
    """Concatenate per-crop results, pasting crop-frame masks into the (H, W) image frame."""
    if len(parts) == 1 and tuple(parts[0].masks.shape[1:]) == hw:
        return parts[0]
    masks = []
    for p in parts:
        full = torch.zeros((len(p), *hw), dtype=torch.bool, device=device)
        if len(p):
            x0, y0 = (int(v) for v in p.crop_boxes[0, :2])
            full[:, y0 : y0 + p.masks.shape[1], x0 : x0 + p.masks.shape[2]] = p.masks
        masks.append(full)
    rest = {f: torch.cat([getattr(p, f) for p in parts]) for f in _FIELDS[1:]}
    return AmgMasks(masks=torch.cat(masks), **rest)


def postprocess_small_regions(result: AmgMasks, min_area: int, nms_thresh: float) -> AmgMasks:
    """Fill holes and drop islands smaller than ``min_area``, then box NMS preferring unchanged masks
    (score 1) over changed ones (score 0), as upstream's ``postprocess_small_regions``. OpenCV, on the CPU;
    the result stays on ``result``'s device."""
    from torchvision.ops import batched_nms

    from zsplg_fast.labeling.amg_ops import masks_to_boxes

    dev = result.masks.device
    new, unchanged = [], []
    for m in result.masks.cpu().numpy():
        m2, ch1 = remove_small_regions(m, min_area, "holes")
        m2, ch2 = remove_small_regions(m2, min_area, "islands")
        new.append(m2)
        unchanged.append(not (ch1 or ch2))
    new_masks = torch.from_numpy(np.stack(new)).to(dev)
    boxes = masks_to_boxes(new_masks)
    scores = torch.tensor(unchanged, dtype=torch.float32, device=dev)
    keep = batched_nms(boxes.float(), scores, torch.zeros_like(scores, dtype=torch.int64), nms_thresh)
    out = result.select(keep)
    out.masks, out.boxes = new_masks[keep], boxes[keep]
    return out
