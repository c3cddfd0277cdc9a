"""A plain folder of images (no labels): recursive, case-insensitive extensions, hidden entries skipped."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from zsplg_runtime.inputs import IMAGE_EXTENSIONS, list_images, sample_id

from zsplg_fast.data.sources import DataSource, Sample, check_root
from zsplg_fast.data.splits import find_split, read_split, resolve_entry

__all__ = ["IMAGE_EXTENSIONS", "list_images", "open_folder", "sample_id"]


def open_folder(arg: str, split: str | Path | None = None, **options: Any) -> DataSource:
    """``folder:DIR``: every image under DIR (see :func:`list_images`), unlabeled.

    With ``split``, the images (and labels, if a line has two fields) listed in that split file,
    relative to DIR, in file order. Ids are root-relative paths without extension either way.

    Raises:
        DatasetError: DIR missing, a missing file in the split, or two images with the same id
            (e.g. ``a.jpg`` and ``a.png`` side by side).
    """
    root = check_root(arg)
    if split is not None:
        split_file = find_split(split, root)
        samples = []
        for e in read_split(split_file):
            image, label = resolve_entry(e, root, split_file)
            samples.append(Sample(sample_id(image, root), image, label))
        return DataSource("folder", root, samples)
    return DataSource("folder", root, [Sample(sample_id(p, root), p) for p in list_images(root)])
