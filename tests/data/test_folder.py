"""Folder source: recursion, case-insensitive extensions, hidden entries skipped, stable unique ids."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from zsplg_fast.data import open_source
from zsplg_fast.data.folder import list_images
from zsplg_fast.errors import DatasetError


def _img(path: Path, fmt: str | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (5, 4), (10, 20, 30)).save(path, format=fmt or "PNG")


def make_folder(root: Path) -> Path:
    _img(root / "b.JPG", "JPEG")
    _img(root / "a.png")
    _img(root / "sub" / "deeper" / "c.Jpeg", "JPEG")
    _img(root / "sub" / "d.TIFF", "TIFF")
    _img(root / "sub" / "e.webp", "WEBP")
    _img(root / "f.bmp", "BMP")
    _img(root / ".hidden.png")
    _img(root / ".cache" / "g.png")
    (root / "notes.txt").write_text("not an image")
    (root / "sub" / "h.gif").write_bytes(b"GIF89a")
    return root


def test_recursive_case_insensitive_sorted(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "imgs")
    rel = [p.relative_to(root).as_posix() for p in list_images(root)]
    assert rel == ["a.png", "b.JPG", "f.bmp", "sub/d.TIFF", "sub/deeper/c.Jpeg", "sub/e.webp"]
    assert [p.name for p in list_images(root, recursive=False)] == ["a.png", "b.JPG", "f.bmp"]


def test_ids_are_relative_paths_without_extension(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "imgs")
    src = open_source(f"folder:{root}")
    assert [s.id for s in src] == ["a", "b", "f", "sub/d", "sub/deeper/c", "sub/e"]
    assert all(s.label_path is None and s.load_label() is None for s in src)
    assert src.samples[3].load_image().shape == (4, 5, 3)
    again = open_source(f"folder:{root}")
    assert [(s.id, s.image_path) for s in again] == [(s.id, s.image_path) for s in src]


def test_duplicate_ids_refused(tmp_path: Path) -> None:
    root = tmp_path / "dup"
    _img(root / "x.png")
    _img(root / "x.jpg", "JPEG")
    with pytest.raises(DatasetError, match=r"sample id 'x' is not unique.*x\.jpg.*x\.png"):
        open_source(f"folder:{root}")


def test_folder_with_split_file(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "imgs")
    (root / "pick.txt").write_text("sub/e.webp\na.png\n")
    assert [s.id for s in open_source(f"folder:{root}", "pick")] == ["sub/e", "a"]
    (root / "pick.txt").write_text("a.png\nmissing.png\n")
    with pytest.raises(DatasetError, match=r"pick\.txt: line 2: 'missing\.png' not found"):
        open_source(f"folder:{root}", "pick.txt")
