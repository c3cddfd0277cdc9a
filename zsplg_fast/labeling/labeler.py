"""One image through the recipe: masks → classes → label map."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from zsplg_fast.labeling.classify import MaskClassifier
from zsplg_fast.labeling.masks import MaskSource
from zsplg_fast.labeling.paint import paint


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
    """

    def __init__(self, masks: MaskSource, classifier: MaskClassifier, uncovered: str = "background") -> None:
        self.masks = masks
        self.classifier = classifier
        self.uncovered = uncovered

    def __call__(self, image: np.ndarray) -> LabelResult:
        """(H, W, 3) uint8 RGB → LabelResult with timings (seconds) per stage in ``meta``."""
        t0 = time.perf_counter()
        ms = self.masks(image)
        t1 = time.perf_counter()
        feats = self.classifier.features(image)
        cls = self.classifier.classify(ms.masks, feats)
        t2 = time.perf_counter()
        label = paint(ms.masks, cls.classes, self.uncovered)
        t3 = time.perf_counter()
        meta = {
            "height": int(image.shape[0]),
            "width": int(image.shape[1]),
            "num_masks": len(ms),
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
                }
                for c, b, s, co, a, p, st, box in zip(
                    cls.classes.tolist(),
                    cls.best.tolist(),
                    cls.scores.tolist(),
                    cls.cosine.tolist(),
                    ms.masks.flatten(1).sum(1).tolist(),
                    ms.predicted_iou.tolist(),
                    ms.stability.tolist(),
                    ms.boxes.tolist(),
                    strict=True,
                )
            ],
            "timings_s": {
                "masks": round(t1 - t0, 4),
                "classify": round(t2 - t1, 4),
                "paint": round(t3 - t2, 4),
            },
        }
        return LabelResult(label, meta)
