"""Review order: which images to look at first, from what ``label`` already wrote.

Per image: the mean and minimum CLIP margin over its masks (softmax probability of the chosen class
minus the runner-up: near 0 means CLIP hesitated between two classes), the uncovered fraction (pixels no
SAM mask covers, painted background by default), the number of masks, and each class's pixel share.

``need`` in [0, 1] ranks them (highest first)::

    need = 0.5 * (1 - mean margin) + 0.25 * (1 - min margin) + 0.25 * uncovered fraction

An image without masks has need 1. Without margins in meta (older folders) the margin terms use the
masks' softmax score instead; without ``uncovered_fraction`` it is the label's background + ignore share.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from zsplg_fast.review.folder import IGNORE, Item, LabelFolder


@dataclass
class ImageStats:
    """Review figures of one image (fractions in [0, 1])."""

    id: str
    need: float
    mean_margin: float | None
    min_margin: float | None
    uncovered: float
    num_masks: int
    height: int
    width: int
    class_pixels: dict[int, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _margins(masks: list[dict[str, Any]]) -> list[float]:
    vals = [m.get("margin") for m in masks]
    if all(v is not None for v in vals):
        return [float(v) for v in vals]  # type: ignore[arg-type]
    return [float(m.get("score", 0.0)) for m in masks]  # older meta: the top-1 probability


def image_stats(item: Item) -> ImageStats:
    """Review figures of one image from its meta and label PNG."""
    meta = item.meta()
    label = item.label()
    masks = meta.get("masks", [])
    counts = np.bincount(label.reshape(-1), minlength=256)
    class_pixels = {int(k): int(counts[k]) for k in np.flatnonzero(counts)}
    total = max(1, label.size)
    if "uncovered_fraction" in meta:
        uncovered = float(meta["uncovered_fraction"])
    else:
        uncovered = float(counts[0] + counts[IGNORE]) / total
    margins = _margins(masks)
    if margins:
        mean_m, min_m = float(np.mean(margins)), float(np.min(margins))
        need = 0.5 * (1 - mean_m) + 0.25 * (1 - min_m) + 0.25 * uncovered
    else:
        mean_m = min_m = None
        need = 1.0
    return ImageStats(
        id=item.id,
        need=round(need, 6),
        mean_margin=None if mean_m is None else round(mean_m, 5),
        min_margin=None if min_m is None else round(min_m, 5),
        uncovered=round(uncovered, 5),
        num_masks=len(masks),
        height=int(label.shape[0]),
        width=int(label.shape[1]),
        class_pixels=class_pixels,
    )


def review_order(folder: LabelFolder) -> list[ImageStats]:
    """Every image's stats, most in need of review first (ties keep id order)."""
    stats = [image_stats(it) for it in folder]
    return sorted(stats, key=lambda s: -s.need)


def class_shares(stats: list[ImageStats], num_classes: int) -> dict[int, float]:
    """Pixel share of each label value over all images (classes 0..C-1 always present, 255 if seen)."""
    tot: dict[int, int] = dict.fromkeys(range(num_classes), 0)
    for s in stats:
        for k, v in s.class_pixels.items():
            tot[k] = tot.get(k, 0) + v
    n = max(1, sum(tot.values()))
    return {k: v / n for k, v in sorted(tot.items())}


def select(folder: LabelFolder, review: int | None) -> list[Item]:
    """The items to export: all (id order), or the ``review`` most in need of review (review order)."""
    if review is None:
        return list(folder)
    return [folder.get(s.id) for s in review_order(folder)[: max(0, review)]]  # type: ignore[misc]
