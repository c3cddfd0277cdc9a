"""A plain folder of images (no labels): recursive, case-insensitive extensions, hidden entries skipped."""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath
from typing import Any

from zsplg_fast.data.sources import DataSource, Sample, check_root
from zsplg_fast.data.splits import find_split, read_split, resolve_entry
from zsplg_fast.errors import DatasetError

IMAGE_EXTENSIONS: frozenset[str] = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"})


def list_images(root: str | Path, recursive: bool = True) -> list[Path]:
    """Image files under ``root``, sorted by their '/'-separated path relative to ``root``.

    Extensions are matched case-insensitively against :data:`IMAGE_EXTENSIONS`; files and folders
    whose name starts with '.' are skipped; symlinked folders are not followed.
    """
    r = Path(root)
    found: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(r):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")] if recursive else []
        for name in filenames:
            if not name.startswith(".") and os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS:
                found.append(Path(dirpath) / name)
    return sorted(found, key=lambda p: p.relative_to(r).as_posix())


def sample_id(path: Path, root: Path) -> str:
    """The id of an image in a folder source: its path relative to ``root`` without the extension,
    '/'-separated (``ROOT/a/b.JPG`` → ``a/b``)."""
    try:
        rel = PurePosixPath(path.relative_to(root).as_posix())
    except ValueError as e:
        raise DatasetError(
            path, f"is outside the dataset root {root}; split paths must be root-relative"
        ) from e
    return str(rel.with_suffix(""))


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
