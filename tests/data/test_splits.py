"""Split files: writing (relative, atomic, no overwrite), lookup by name; reading is covered in test_voc."""

from __future__ import annotations

from pathlib import Path

import pytest

from zsplg_fast.data.splits import SPLIT_NAMES, SplitEntry, find_split, read_split, write_split
from zsplg_fast.errors import DatasetError, OutputExistsError


def test_split_names() -> None:
    assert SPLIT_NAMES == ("labeled.txt", "unlabeled.txt", "val.txt")


def test_roundtrip_entries_and_absolute_paths(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    (root / "JPEGImages").mkdir(parents=True)
    (root / "JPEGImages" / "a.jpg").write_bytes(b"x")
    path = tmp_path / "val.txt"
    entries = [SplitEntry("JPEGImages/a.jpg", "SegmentationClass/a.png"), SplitEntry("JPEGImages/b.jpg")]
    assert write_split(path, entries) == 2
    assert [(e.image, e.label, e.line) for e in read_split(path)] == [
        ("JPEGImages/a.jpg", "SegmentationClass/a.png", 1),
        ("JPEGImages/b.jpg", None, 2),
    ]
    with pytest.raises(DatasetError, match="not under the dataset root"):
        write_split(tmp_path / "y.txt", [tmp_path / "elsewhere.jpg"], root=root)
    with pytest.raises(DatasetError, match="split file not found"):
        read_split(tmp_path / "missing.txt")


def test_write_split_refuses_overwrite_and_spaces(tmp_path: Path) -> None:
    path = tmp_path / "unlabeled.txt"
    write_split(path, ["JPEGImages/a.jpg"])
    with pytest.raises(OutputExistsError):
        write_split(path, ["JPEGImages/b.jpg"])
    write_split(path, ["JPEGImages/b.jpg"], force=True)
    assert path.read_text() == "JPEGImages/b.jpg\n"
    with pytest.raises(DatasetError, match="whitespace"):
        write_split(tmp_path / "x.txt", ["JPEGImages/a b.jpg"])


def test_find_split_lists_what_it_tried(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    (root / "splits").mkdir(parents=True)
    (root / "splits" / "labeled.txt").write_text("JPEGImages/a.jpg\n")
    (root / "ImageSets" / "Segmentation").mkdir(parents=True)
    (root / "ImageSets" / "Segmentation" / "train.txt").write_text("a\n")
    (root / "val.txt").write_text("JPEGImages/a.jpg\n")
    assert find_split("labeled", root) == root / "splits" / "labeled.txt"
    assert find_split("val", root) == root / "val.txt"
    assert find_split(root / "val.txt", tmp_path) == root / "val.txt"
    assert find_split("train", root, ("ImageSets/Segmentation",)) == root / "ImageSets/Segmentation/train.txt"
    with pytest.raises(DatasetError, match=r"tried .*nosuch\.txt"):
        find_split("nosuch", root)
