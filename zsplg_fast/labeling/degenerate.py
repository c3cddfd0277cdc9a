"""Warn early when a label run produces degenerate labels (one class everywhere, or no masks kept).

A model with the wrong settings (e.g. the toy CLIP at GEM depth 0 but image size 448) labels every pixel
background without any error; this watch looks at the first N labels of a run and logs one warning with
the figures and the settings to look at.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np

log = logging.getLogger("zsplg_fast.labeling")

DOMINANT_FRACTION = 0.98
SETTINGS_HINT = (
    "look at clip.image_size and clip.gem_depth (the model's preset: `zsplg-fast config show`), "
    "classify.include_background_prompt and classify.score_threshold (class choice), "
    "amg.pred_iou_thresh and amg.stability_score_thresh (masks kept)"
)


@dataclass
class DegenerateWatch:
    """Counts class pixels and kept masks over the first ``first`` labels (0 = off)."""

    first: int = 5
    dominant: float = DOMINANT_FRACTION
    seen: int = 0
    masks: int = 0
    counts: np.ndarray = field(default_factory=lambda: np.zeros(256, np.int64))
    message: str | None = None

    def add(self, label: np.ndarray, num_masks: int) -> str | None:
        """Add one (H, W) uint8 label and its kept-mask count; at the ``first``-th label, return (and log)
        the warning if the labels so far are degenerate, else None."""
        if self.first <= 0 or self.seen >= self.first:
            return None
        self.counts += np.bincount(np.asarray(label, np.uint8).ravel(), minlength=256)
        self.masks += int(num_masks)
        self.seen += 1
        if self.seen < self.first:
            return None
        self.message = self.verdict()
        if self.message:
            log.warning("%s", self.message)
        return self.message

    def verdict(self) -> str | None:
        """The warning for the labels seen so far, or None when they look usable."""
        total = int(self.counts.sum())
        if not total:
            return None
        top = int(self.counts.argmax())
        share = self.counts[top] / total
        problems = []
        if share > self.dominant:
            name = "ignore (255)" if top == 255 else f"class {top}"
            problems.append(
                f"{100 * share:.1f} % of all pixels are {name} (over {100 * self.dominant:.0f} %)"
            )
        if self.masks == 0:
            problems.append("no masks were kept")
        if not problems:
            return None
        return (
            f"the first {self.seen} labels look degenerate: {'; '.join(problems)} "
            f"({self.masks / self.seen:.1f} masks kept per image); {SETTINGS_HINT}"
        )
