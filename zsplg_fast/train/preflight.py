"""Data preflight: check every image and label once, before training, with the data layer's own checks
(``zsplg_fast.data.check.check_source``: image decodes, label reads with values in {0..C-1, 255}, sizes
match), run over chunks in threads.

A worker dying on a corrupt file hours into a run is the failure this prevents. The result of a clean
check is cached under a fingerprint of the files (path, size, mtime) and the class count, so a rerun on
unchanged data costs a few ``stat`` calls.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

from zsplg_fast.data.check import Problem, check_source
from zsplg_fast.data.sources import DataSource, Sample
from zsplg_fast.errors import DatasetError
from zsplg_fast.utils.io import atomic_write_json

PREFLIGHT_VERSION = 2  # 2: the result lists all-ignore labels (cached results of 1 lack them)


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/zsplg-fast/preflight`` (``~/.cache/...`` when unset)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "zsplg-fast" / "preflight"


def _stat(p: Path | None) -> list[Any]:
    if p is None:
        return [None]
    try:
        st = p.stat()
    except OSError:
        return [str(p), None]
    return [str(p.resolve()), st.st_size, st.st_mtime_ns]


def fingerprint_samples(
    samples: Sequence[Sample], num_classes: int, extra_labels: dict[str, Path] | None = None
) -> str:
    """sha256 (24 hex) over every file's path, size and mtime, the class count and the checker version."""
    h = hashlib.sha256(json.dumps([PREFLIGHT_VERSION, num_classes]).encode())
    extra = extra_labels or {}
    for s in samples:
        generated = "generated" if s.label_loader is not None else None
        row = [s.id, _stat(s.image_path), _stat(s.label_path), generated, _stat(extra.get(s.id))]
        h.update(json.dumps(row).encode())
    return h.hexdigest()[:24]


def _check(
    samples: list[Sample], num_classes: int, max_long_side: int, workers: int
) -> tuple[list[Problem], list[str]]:
    """The data layer's ``check_source`` over chunks of ``samples`` in threads: the problems found and
    the ids of samples whose label is all ignore (255)."""
    n = max(1, workers)
    chunks = [samples[i::n] for i in range(n) if samples[i::n]]

    def run(chunk: list[Sample]) -> tuple[list[Problem], list[str]]:
        src = DataSource("preflight", Path("."), chunk)
        report = check_source(src, num_classes=num_classes, max_long_side=max_long_side)
        return report.problems, report.all_ignore

    with ThreadPoolExecutor(n) as pool:
        parts = list(pool.map(run, chunks))
    return [p for part, _ in parts for p in part], sorted(i for _, ids in parts for i in ids)


def check_trainable(samples: Sequence[Sample], result: dict[str, Any]) -> None:
    """Refuse training data whose labels hold no trainable pixel: every mask of ``samples`` (the ones
    the loss is computed on) is ignore (255). Training would run with loss 0 and save a model that
    learned nothing.

    Raises:
        DatasetError: "all N labeled masks are ignore (255)", naming the first label file.
    """
    ignored = set(result.get("all_ignore", []))
    labeled = [s for s in samples if s.has_label]
    if labeled and all(s.id in ignored for s in labeled):
        raise DatasetError(
            labeled[0].label_path or labeled[0].image_path,
            f"all {len(labeled)} labeled masks are ignore (255): no pixel to train on; check the labels "
            "(class indices 0..C-1, 255 only where a pixel is unknown)",
        )


def preflight(
    samples: Sequence[Sample],
    num_classes: int,
    cache_dir: str | Path | None = None,
    extra_labels: dict[str, Path] | None = None,
    max_long_side: int = 16384,
    workers: int = 4,
) -> dict[str, Any]:
    """Decode every image and label of ``samples`` once and check values and sizes.

    Args:
        samples: the training/val samples (labels checked against {0..C-1, 255} and the image size).
        num_classes: C.
        cache_dir: where clean results are cached by fingerprint (default :func:`default_cache_dir`).
        extra_labels: sample id → optional label file (zero-shot / enhanced); a missing file is
            counted, not an error (the sample then has no such label).
        max_long_side: the image loader's bomb guard.
        workers: decoding threads.

    Returns:
        ``{"fingerprint", "checked", "missing_extra", "all_ignore", "cached", "seconds"}``;
        ``all_ignore`` lists the ids of samples whose label is all 255 (see :func:`check_trainable`).

    Raises:
        DatasetError: naming the first bad file, the number of failures and the JSON list of all.
    """
    t0 = time.perf_counter()
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    fp = fingerprint_samples(samples, num_classes, extra_labels)
    hit = cache / f"{fp}.json"
    if hit.is_file():
        try:
            return {**json.loads(hit.read_text()), "cached": True, "seconds": time.perf_counter() - t0}
        except (OSError, json.JSONDecodeError):
            pass
    extra = extra_labels or {}
    by_id = {x.id: x for x in samples}
    problems, all_ignore = _check(list(samples), num_classes, max_long_side, workers)
    # zero-shot / enhanced labels: checked against their image the same way, as extra samples
    present = [replace(by_id[i], label_path=p, label_loader=None) for i, p in extra.items() if p.is_file()]
    missing = sum(1 for p in extra.values() if not p.is_file())
    problems += _check(present, num_classes, max_long_side, workers)[0]
    if problems:
        report = cache / f"{fp}.errors.json"
        atomic_write_json(report, [p.__dict__ for p in problems])
        first = problems[0]
        raise DatasetError(
            by_id[first.sample_id].image_path,
            f"preflight: {len(problems)} problems in {len(samples)} samples (first: {first.message}); "
            f"all listed in {report}; fix or drop them from the split",
        )
    result = {"fingerprint": fp, "checked": len(samples), "missing_extra": missing, "all_ignore": all_ignore}
    atomic_write_json(hit, result)
    return {**result, "cached": False, "seconds": time.perf_counter() - t0}
