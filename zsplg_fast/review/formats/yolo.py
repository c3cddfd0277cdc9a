"""YOLO-seg (Ultralytics): ``labels/<id>.txt`` lines ``cls x1 y1 x2 y2 …`` (normalised), ``data.yaml``.

Polygons come from each SAM mask's visible part (or each class region in older folders) with OpenCV
contours. The format has no holes and one polygon per line: each connected part is its own line, and a
hole is joined to its outer contour by a zero-width cut (the same trick Ultralytics uses to merge
segments), so filling the polygon leaves the hole empty. Background is not a YOLO class (YOLO class
k-1 = our class k). The written lines are read back, filled (``cv2.fillPoly``, as Ultralytics'
``polygon2mask``) and the IoU against the label PNG is reported.
"""

from __future__ import annotations

import json
import shutil
from typing import Any

import numpy as np

from zsplg_fast.review.folder import Item, class_regions, visible_masks
from zsplg_fast.review.formats.base import ExportContext, Format, image_name
from zsplg_fast.utils.io import atomic_path, atomic_write_text


def _with_holes(outer: np.ndarray, holes: list[np.ndarray]) -> np.ndarray:
    """Join each hole to the outer ring at their closest vertices: one ring (N, 2) int."""
    ring = outer
    for hole in holes:
        d = ((ring[:, None, :] - hole[None, :, :]) ** 2).sum(-1)
        i, j = np.unravel_index(int(np.argmin(d)), d.shape)
        h = np.concatenate([hole[j:], hole[: j + 1]])
        ring = np.concatenate([ring[: i + 1], h, ring[i:]])
    return ring


def mask_polygons(mask: np.ndarray) -> list[np.ndarray]:
    """(H, W) bool → rings (N, 2) int32 of pixel coordinates (x, y), holes joined to their outer ring."""
    import cv2

    contours, hier = cv2.findContours(mask.astype(np.uint8), cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE)
    if hier is None:
        return []
    rings = []
    for k, c in enumerate(contours):
        if hier[0][k][3] != -1:
            continue  # a hole: joined to its parent below
        holes = [contours[j][:, 0, :] for j in range(len(contours)) if hier[0][j][3] == k]
        rings.append(_with_holes(c[:, 0, :], holes).astype(np.int32))
    return rings


def draw_polygons(shape: tuple[int, int], polys: list[tuple[int, list[np.ndarray]]]) -> np.ndarray:
    """Paint (class, rings) back into an (H, W) uint8 label (0 elsewhere), in the given order."""
    import cv2

    out = np.zeros(shape, np.uint8)
    for cls, rings in polys:
        tmp = np.zeros(shape, np.uint8)
        cv2.fillPoly(tmp, [r.reshape(-1, 1, 2) for r in rings], 1)
        out[tmp > 0] = cls
    return out


def read_lines(lines: list[str], shape: tuple[int, int]) -> list[tuple[int, list[np.ndarray]]]:
    """YOLO-seg lines → (our class, [ring (N, 2) int32 pixels]) per line, coordinates denormalised."""
    h, w = shape
    out = []
    for line in lines:
        v = line.split()
        xy = np.asarray(v[1:], np.float64).reshape(-1, 2) * (w, h)
        out.append((int(v[0]) + 1, [np.rint(xy).astype(np.int32)]))
    return out


def class_iou(a: np.ndarray, b: np.ndarray, classes: list[int]) -> float:
    """Mean IoU of ``a`` and ``b`` over ``classes`` present in either (1.0 when none)."""
    ious = []
    for c in classes:
        x, y = a == c, b == c
        union = int((x | y).sum())
        if union:
            ious.append(int((x & y).sum()) / union)
    return float(np.mean(ious)) if ious else 1.0


def _polys(it: Item, label: np.ndarray) -> list[tuple[int, list[np.ndarray]]]:
    parts = visible_masks(label, it.meta())
    parts = class_regions(label) if parts is None else parts
    return [(cls, mask_polygons(vis)) for cls, _, vis in parts]


def export_yolo(ctx: ExportContext) -> dict[str, Any]:
    """Write ``labels/*.txt``, ``images/`` (copies) and ``data.yaml``; returns the IoU lost."""
    classes = ctx.folder.classes
    ious = []
    for it in ctx.items:
        label = it.label()
        h, w = label.shape
        polys = _polys(it, label)
        lines = []
        for cls, rings in polys:
            for r in rings:
                xy = np.stack([r[:, 0] / w, r[:, 1] / h], 1).reshape(-1)
                lines.append(f"{cls - 1} " + " ".join(f"{v:.6f}" for v in xy))
        atomic_write_text(ctx.out / "labels" / f"{it.id}.txt", "".join(line + "\n" for line in lines))
        if it.image_path is not None and it.image_path.is_file():
            with atomic_path(ctx.out / "images" / image_name(it)) as tmp:
                shutil.copyfile(it.image_path, tmp)
        drawn = draw_polygons((h, w), read_lines(lines, (h, w)))  # what a YOLO reader gets back
        ref = np.where(label == 255, 0, label)
        ious.append(class_iou(ref, drawn, list(range(1, len(classes)))))
    names = "".join(f"  {k - 1}: {json.dumps(n)}\n" for k, n in enumerate(classes) if k)  # JSON ⊂ YAML
    atomic_write_text(ctx.out / "data.yaml", f"path: .\ntrain: images\nval: images\nnames:\n{names}")
    lost = 1.0 - float(np.mean(ious)) if ious else 0.0
    ctx.notes.append(f"polygon conversion loses {100 * lost:.3f} IoU points (mean over images and classes)")
    return {
        "images": len(ctx.items),
        "polygon_miou": round(float(np.mean(ious)), 6) if ious else 1.0,
        "polygon_min_image_miou": round(float(np.min(ious)), 6) if ious else 1.0,
        "iou_lost": round(lost, 6),
    }


FORMAT = Format("yolo-seg", "YOLO-seg (Ultralytics polygons)", export_yolo)
