"""Check every sample of a source: image decodes, label reads, sizes match; problems counted, not raised."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from zsplg_fast.data.images import DEFAULT_MAX_LONG_SIDE, LoadStats
from zsplg_fast.data.labels import IGNORE_INDEX, check_pair
from zsplg_fast.data.sources import DataSource
from zsplg_fast.errors import ZsplgError


@dataclass
class Problem:
    """One failed sample: its id, the error type name and the one-line message."""

    sample_id: str
    error: str
    message: str


@dataclass
class CheckReport:
    """Result of :func:`check_source`."""

    source: str
    samples: int = 0
    labeled: int = 0
    ok: int = 0
    problems: list[Problem] = field(default_factory=list)
    load_stats: LoadStats = field(default_factory=LoadStats)
    num_classes: int | None = None
    classes_from: str = "not checked"
    all_ignore: list[str] = field(default_factory=list)
    label_stats: dict[str, int] = field(default_factory=dict)
    label_skips: list[dict[str, Any]] = field(default_factory=list)

    @property
    def notes(self) -> dict[str, int]:
        """Counted findings that are not failures: all-ignore masks, dropped COCO polygons/annotations."""
        out = {k: v for k, v in self.label_stats.items() if v and k.startswith(("polygons_", "annotations_"))}
        if self.all_ignore:
            out["all_ignore_masks"] = len(self.all_ignore)
        return out

    @property
    def problem_counts(self) -> Counter[str]:
        """Error type name → number of samples."""
        return Counter(p.error for p in self.problems)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able summary."""
        return {
            "source": self.source,
            "samples": self.samples,
            "labeled": self.labeled,
            "ok": self.ok,
            "problem_counts": dict(self.problem_counts),
            "problems": [p.__dict__ for p in self.problems],
            "load_stats": self.load_stats.to_dict(),
            "num_classes": self.num_classes,
            "classes_from": self.classes_from,
            "notes": self.notes,
            "all_ignore": self.all_ignore,
            "skipped_annotations": self.label_skips,
        }


def check_source(
    source: DataSource,
    *,
    num_classes: int | None = None,
    max_long_side: int = DEFAULT_MAX_LONG_SIDE,
    rescale_high_bit_depth: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> CheckReport:
    """Load every image and label of ``source``; a :class:`~zsplg_fast.errors.ZsplgError` on a sample
    becomes a :class:`Problem`. ``progress(done, total)`` is called after each sample.

    Label values are checked against ``num_classes``, by default the dataset's own class list
    (``classes.txt``, or the COCO categories). Masks that are all ignore (255) and the source's dropped
    polygons / annotations are reported as notes (counted, not failures).
    """
    report = CheckReport(source=f"{source.name}:{source.root}")
    if num_classes is not None:
        report.num_classes, report.classes_from = num_classes, "given"
    elif source.class_names:
        num_classes = len(source.class_names)
        own = "classes.txt" if (source.root / "classes.txt").is_file() else f"the {source.name} class list"
        report.num_classes, report.classes_from = num_classes, own
    total = len(source.samples)
    for k, s in enumerate(source.samples):
        report.samples += 1
        try:
            image = s.load_image(
                max_long_side=max_long_side,
                rescale_high_bit_depth=rescale_high_bit_depth,
                stats=report.load_stats,
            )
            label = s.load_label(num_classes)
            if label is not None:
                report.labeled += 1
                check_pair(s.image_path, image.shape[:2], s.label_path or "<generated label>", label.shape)
                if label.size and bool((label == IGNORE_INDEX).all()):
                    report.all_ignore.append(s.id)
            report.ok += 1
        except ZsplgError as e:
            report.problems.append(Problem(s.id, type(e).__name__, str(e)))
        if progress is not None:
            progress(k + 1, total)
    report.label_stats = dict(source.label_stats)
    report.label_skips = list(source.label_skips)
    return report
