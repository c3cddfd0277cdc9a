"""Data preflight: check every image and label once, before training, with the data layer's own checks.

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
from pathlib import Path
from typing import Any

from zsplg_fast.data.images import load_image
from zsplg_fast.data.labels import check_pair, read_label
from zsplg_fast.data.sources import Sample
from zsplg_fast.errors import DatasetError, ZsplgError
from zsplg_fast.utils.io import atomic_write_json

PREFLIGHT_VERSION = 1


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


def _check_one(
    s: Sample, num_classes: int, extra: Path | None, max_long_side: int
) -> tuple[str | None, str | None, bool]:
    """(failing path, message) or (None, None); and whether the extra label was missing."""
    try:
        img = load_image(s.image_path, max_long_side=max_long_side)
        label = s.load_label(num_classes)
        if label is not None:
            check_pair(s.image_path, img.shape[:2], s.label_path or s.image_path, label.shape)
        if extra is None:
            return None, None, False
        if not extra.is_file():
            return None, None, True
        zs = read_label(extra, num_classes)
        check_pair(s.image_path, img.shape[:2], extra, zs.shape)
    except ZsplgError as e:
        return str(getattr(e, "path", s.image_path)), str(e), False
    return None, None, False


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
        ``{"fingerprint", "checked", "missing_extra", "cached", "seconds"}``.

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
    with ThreadPoolExecutor(max(1, workers)) as pool:
        results = list(
            pool.map(lambda s: _check_one(s, num_classes, extra.get(s.id), max_long_side), samples)
        )
    failures = [{"path": p, "error": m} for p, m, _ in results if p is not None]
    missing = sum(1 for _, _, miss in results if miss)
    if failures:
        report = cache / f"{fp}.errors.json"
        atomic_write_json(report, failures)
        first = failures[0]
        raise DatasetError(
            first["path"],
            f"preflight: {len(failures)} of {len(samples)} samples failed (first: {first['error']}); "
            f"all listed in {report}; fix or drop them from the split",
        )
    result = {"fingerprint": fp, "checked": len(samples), "missing_extra": missing}
    atomic_write_json(hit, result)
    return {**result, "cached": False, "seconds": time.perf_counter() - t0}
