"""VOC layout source and UniMatch split files on a small VOC tree built in tmp_path."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from zsplg_fast.data import open_source, read_split, write_label, write_split
from zsplg_fast.data.splits import SplitEntry
from zsplg_fast.errors import DatasetError

IDS = ["2007_000032", "2007_000039", "2008_000001"]


def make_voc(root: Path, aug: bool = False) -> Path:
    """JPEGImages (3 images 6x8), SegmentationClass for the first two, ImageSets train/val, classes.txt."""
    (root / "JPEGImages").mkdir(parents=True)
    for k, sid in enumerate(IDS):
        Image.new("RGB", (8, 6), (k * 40, 0, 0)).save(root / "JPEGImages" / f"{sid}.jpg")
        if k < 2:
            write_label(root / "SegmentationClass" / f"{sid}.png", np.full((6, 8), k + 1, np.uint8))
    if aug:
        for sid in IDS:
            write_label(root / "SegmentationClassAug" / f"{sid}.png", np.full((6, 8), 7, np.uint8))
    sets = root / "ImageSets" / "Segmentation"
    sets.mkdir(parents=True)
    (sets / "train.txt").write_text(f"{IDS[0]}\n{IDS[2]}\n")
    (sets / "val.txt").write_text(f"{IDS[1]}\n")
    (root / "classes.txt").write_text("background\naeroplane\nbicycle|bike\n")
    return root


def test_voc_all_images_sorted_with_labels(tmp_path: Path) -> None:
    src = open_source(f"voc:{make_voc(tmp_path / 'voc')}")
    assert src.name == "voc" and [s.id for s in src] == IDS
    assert src.class_names == ["background", "aeroplane", "bicycle|bike"]
    assert src.samples[0].label_path == tmp_path / "voc" / "SegmentationClass" / f"{IDS[0]}.png"
    assert src.samples[2].label_path is None and src.samples[2].load_label() is None
    assert src.samples[1].load_label(num_classes=3).tolist() == np.full((6, 8), 2).tolist()
    assert src.samples[0].load_image().shape == (6, 8, 3)


def test_voc_prefers_aug_unless_told(tmp_path: Path) -> None:
    root = make_voc(tmp_path / "voc", aug=True)
    src = open_source(f"voc:{root}")
    assert all(s.label_path is not None and s.label_path.parent.name == "SegmentationClassAug" for s in src)
    assert int(src.samples[0].load_label()[0, 0]) == 7
    plain = open_source(f"voc:{root}", label_dir="SegmentationClass")
    assert int(plain.samples[0].load_label()[0, 0]) == 1
    with pytest.raises(DatasetError, match="label folder not found"):
        open_source(f"voc:{root}", label_dir="Nope")


def test_voc_imagesets_split_by_name(tmp_path: Path) -> None:
    root = make_voc(tmp_path / "voc")
    assert [s.id for s in open_source(f"voc:{root}", "train")] == [IDS[0], IDS[2]]
    val = open_source(f"voc:{root}", "val")
    assert [s.id for s in val] == [IDS[1]] and val.samples[0].label_path is not None
    (root / "ImageSets" / "Segmentation" / "bad.txt").write_text(f"{IDS[0]}\n2099_999999\n")
    with pytest.raises(DatasetError, match=r"bad\.txt.*line 2.*2099_999999"):
        open_source(f"voc:{root}", "bad")


def test_unimatch_split_file(tmp_path: Path) -> None:
    root = make_voc(tmp_path / "voc")
    split = tmp_path / "labeled.txt"
    n = write_split(
        split,
        [
            (f"JPEGImages/{IDS[1]}.jpg", f"SegmentationClass/{IDS[1]}.png"),
            root / "JPEGImages" / f"{IDS[2]}.jpg",
        ],
        root=root,
    )
    assert n == 2
    assert split.read_text() == (
        f"JPEGImages/{IDS[1]}.jpg SegmentationClass/{IDS[1]}.png\nJPEGImages/{IDS[2]}.jpg\n"
    )
    entries = read_split(split, root)
    assert entries == [
        SplitEntry(f"JPEGImages/{IDS[1]}.jpg", f"SegmentationClass/{IDS[1]}.png", 1),
        SplitEntry(f"JPEGImages/{IDS[2]}.jpg", None, 2),
    ]
    src = open_source(f"voc:{root}", split)
    assert [s.id for s in src] == [IDS[1], IDS[2]]
    assert src.samples[0].label_path is not None and src.samples[1].label_path is None


def test_split_missing_file_names_split_and_line(tmp_path: Path) -> None:
    root = make_voc(tmp_path / "voc")
    split = root / "val.txt"
    split.write_text(
        f"# comment\nJPEGImages/{IDS[0]}.jpg SegmentationClass/{IDS[0]}.png\n\n"
        f"JPEGImages/{IDS[2]}.jpg SegmentationClass/{IDS[2]}.png\n"
    )
    with pytest.raises(DatasetError, match=rf"val\.txt: line 4: 'SegmentationClass/{IDS[2]}\.png' not found"):
        read_split(split, root)
    with pytest.raises(DatasetError, match=r"val\.txt: line 4"):
        open_source(f"voc:{root}", "val.txt")  # found as ROOT/val.txt
    split.write_text("a b c\n")
    with pytest.raises(DatasetError, match="line 1: expected 'IMAGE \\[LABEL\\]', got 3 fields"):
        read_split(split)


def test_not_a_voc_folder(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="JPEGImages/ is missing"):
        open_source(f"voc:{tmp_path / 'empty'}")
    with pytest.raises(DatasetError, match="not found"):
        open_source(f"voc:{tmp_path / 'nope'}")


def test_synthetic_alias_reads_voc_layout(tmp_path: Path) -> None:
    src = open_source(f"synthetic:{make_voc(tmp_path / 'syn')}", "val")
    assert src.name == "synthetic" and [s.id for s in src] == [IDS[1]]
