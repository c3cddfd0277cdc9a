"""mIoU as UniMatch computes it: intersection and union summed over the dataset, 255 ignored.

Follows UniMatch ``util/utils.py::intersectionAndUnion`` (histogram of correct / predicted / target
pixels per class, accumulated over images, IoU = I / (U + 1e-10)).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from zsplg_fast.errors import LabelFormatError

IGNORE = 255
NO_VALID_PIXELS = (
    "0 valid pixels: every ground-truth pixel is ignore (255), so the mIoU is computed over nothing; "
    "check the ground-truth labels"
)


@dataclass
class ConfusionMatrix:
    """Accumulates a (C, C) confusion matrix, rows = ground truth, columns = prediction.

    Pixels whose ground truth is ``ignore_index`` are skipped. Ground-truth values outside
    ``[0, C)`` (other than ignore) are refused; predictions outside ``[0, C)`` count as wrong for
    the ground-truth class (they add to its union) but belong to no predicted class.
    """

    num_classes: int
    ignore_index: int = IGNORE
    matrix: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.matrix = np.zeros((self.num_classes, self.num_classes), dtype=np.int64)
        self._pred_out_of_range = np.zeros(self.num_classes, dtype=np.int64)

    def update(
        self, pred: np.ndarray, gt: np.ndarray, name: str = "<array>", gt_name: str | None = None
    ) -> None:
        """Add one image. ``pred``, ``gt``: (H, W) integer class maps of equal shape.

        ``name`` (the prediction's file) and ``gt_name`` (the ground truth's, when it has one) are named
        in errors."""
        pred = np.asarray(pred)
        gt = np.asarray(gt)
        if pred.shape != gt.shape:
            of_gt = f" of {gt_name}" if gt_name is not None else ""
            raise LabelFormatError(
                name, f"prediction shape {pred.shape} != ground-truth shape {gt.shape}{of_gt}"
            )
        valid = gt != self.ignore_index
        g = gt[valid].astype(np.int64)
        p = pred[valid].astype(np.int64)
        bad = (g < 0) | (g >= self.num_classes)
        if bad.any():
            raise LabelFormatError(
                name, f"ground truth has values outside 0..{self.num_classes - 1} and 255", np.unique(g[bad])
            )
        in_range = (p >= 0) & (p < self.num_classes)
        c = self.num_classes
        self.matrix += np.bincount(g[in_range] * c + p[in_range], minlength=c * c).reshape(c, c)
        self._pred_out_of_range += np.bincount(g[~in_range], minlength=c)

    def merge(self, other: ConfusionMatrix) -> None:
        """Add another matrix (e.g. from another process)."""
        self.matrix += other.matrix
        self._pred_out_of_range += other._pred_out_of_range

    def intersection_union(self) -> tuple[np.ndarray, np.ndarray]:
        """Per-class intersection and union, (C,) int64 each."""
        inter = np.diag(self.matrix)
        area_gt = self.matrix.sum(1) + self._pred_out_of_range
        area_pred = self.matrix.sum(0)
        return inter, area_gt + area_pred - inter

    def iou(self) -> np.ndarray:
        """Per-class IoU in [0, 1], (C,) float64; a class absent from both gt and pred gets 0 (UniMatch)."""
        inter, union = self.intersection_union()
        return inter / (union + 1e-10)

    def present(self) -> np.ndarray:
        """(C,) bool: classes that occur in ground truth or prediction."""
        _, union = self.intersection_union()
        return union > 0

    def miou(self, present_only: bool = False) -> float:
        """Mean IoU in [0, 1]. UniMatch averages over all classes; ``present_only`` averages the present."""
        iou = self.iou()
        if present_only:
            mask = self.present()
            return float(iou[mask].mean()) if mask.any() else 0.0
        return float(iou.mean())

    def pixel_accuracy(self) -> float:
        """Fraction of non-ignored pixels predicted correctly."""
        total = self.matrix.sum() + self._pred_out_of_range.sum()
        return float(np.diag(self.matrix).sum() / total) if total else 0.0

    def valid_pixels(self) -> int:
        """Pixels scored so far: ground truth not ``ignore_index`` (0 = a number computed over nothing)."""
        return int(self.matrix.sum() + self._pred_out_of_range.sum())

    def report(self, class_names: Sequence[str] | None = None) -> dict:
        """JSON-able summary: mIoU (all classes and present classes), per-class IoU, pixel accuracy,
        ``valid_pixels`` and ``warnings`` (one line each: 0 valid pixels makes the mIoU meaningless)."""
        names = list(class_names) if class_names else [str(i) for i in range(self.num_classes)]
        iou = self.iou()
        present = self.present()
        valid = self.valid_pixels()
        warnings = [] if valid else [NO_VALID_PIXELS]
        return {
            "miou": self.miou(),
            "miou_present": self.miou(present_only=True),
            "pixel_accuracy": self.pixel_accuracy(),
            "per_class": [
                {"index": i, "name": names[i], "iou": float(iou[i]), "present": bool(present[i])}
                for i in range(self.num_classes)
            ],
            "valid_pixels": valid,
            "warnings": warnings,
        }
