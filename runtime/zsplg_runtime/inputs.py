"""Which images a folder holds, and their ids (shared by ``zsplg-fast``'s folder source and ``infer``)."""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath

from zsplg_runtime.errors import DatasetError

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


def image_inputs(path: Path) -> list[tuple[str, Path]]:
    """(id, path) of every image of ``path``: a folder (recursive, ids relative to it) or one file
    (id = its stem).

    Raises:
        DatasetError: a folder without images, or a path that does not exist.
    """
    if path.is_dir():
        found = [(sample_id(p, path), p) for p in list_images(path)]
        if not found:
            raise DatasetError(path, "no image files found (jpg, png, bmp, webp, tif)")
        return found
    if not path.exists():
        raise DatasetError(path, "input not found; give an image file or a folder of images")
    return [(path.stem, path)]
