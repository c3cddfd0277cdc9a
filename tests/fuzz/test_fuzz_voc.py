"""Fuzzed VOC split files and label PNGs: ``read_label``, and ``data check --data voc:DIR --split``."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
from hypothesis import example, given
from hypothesis import strategies as st
from PIL import Image

from zsplg_fast.data.labels import read_label, write_label
from zsplg_fast.errors import LabelFormatError

from .conftest import budget, check_outcome, files_under, run_cli
from .strategies import ODD_TEXT, damaged, png_files, png_header

IDS = ("2007_000032", "2007_000033", "sub/2008_000001")

LINES = st.one_of(
    st.sampled_from(
        [
            "2007_000032",
            "JPEGImages/2007_000033.jpg SegmentationClass/2007_000033.png",
            "JPEGImages/sub/2008_000001.jpg",
            "# a comment",
            "",
            "   ",
            "a b c",
            "missing_id",
            "JPEGImages/2007_000032.jpg SegmentationClass/none.png",
            "/etc/hostname",
            "../../etc/hostname",
            "JPEGImages/../JPEGImages/2007_000032.jpg",
            "JPEGImages",
            "SegmentationClass/2007_000032.png JPEGImages/2007_000032.jpg",  # swapped
            "x" * 300,
            "a/" * 200 + "b",
            "2007_000032\t2007_000033",
        ]
    ),
    st.sampled_from(ODD_TEXT),
    st.text(alphabet=st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=20),
)
SPLITS = (
    st.lists(LINES, max_size=6)
    .map(lambda ls: "\n".join(ls).encode("utf-8", "surrogatepass"))
    .flatmap(damaged)
)


def _voc(root: Path) -> None:
    for i, sid in enumerate(IDS):
        img = root / "JPEGImages" / f"{sid}.jpg"
        img.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((6, 8, 3), 40 * i, np.uint8)).save(img)
        lab = np.zeros((6, 8), np.uint8)
        lab[1:3, 2:5] = i + 1
        write_label(root / "SegmentationClass" / f"{sid}.png", lab)
    (root / "classes.txt").write_text("background\na\nb\nc\n")


@budget(100)
@given(split=SPLITS)
@example(split=("x" * 300).encode())  # ENAMETOOLONG from is_file(): was an OSError, exit 1
def test_voc_split_never_tracebacks(split: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "voc"
        _voc(root)
        (root / "fuzz.txt").write_bytes(split)
        before = files_under(root)
        res = run_cli(["data", "check", "--data", f"voc:{root}", "--split", str(root / "fuzz.txt")])
        # 1: the check ran and counted problems (its report); 2: a typed error (the split file named)
        check_outcome(
            res, before, files_under(root), None, allowed=(0, 1, 2), explain=lambda: repr(split[:300])
        )
        if res.code == 1:
            assert "error:" not in res.err
        if res.code == 2:
            assert "fuzz.txt" in res.err or "voc" in res.err


@budget(200)
@given(data=png_files())
# a header declaring 10**10 pixels: PIL's DecompressionBombError is not an OSError (was a traceback)
@example(data=png_header(100_000, 100_000))
def test_read_label_is_an_array_or_a_label_format_error(data: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        p = Path(tmp) / "x.png"
        p.write_bytes(data)
        try:
            label = read_label(p, num_classes=21)
        except LabelFormatError as e:
            assert str(e).startswith(str(p)) and "\n" not in str(e)
            return
        assert label.dtype == np.uint8 and label.ndim == 2 and label.size > 0
        assert set(np.unique(label).tolist()) <= {*range(21), 255}


@budget(50)
@given(data=png_files(max_side=8))
def test_data_check_with_a_fuzzed_label(data: bytes) -> None:
    """The same PNGs as a VOC label beside a real image: ``data check`` counts them or passes them."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "voc"
        _voc(root)
        (root / "SegmentationClass" / f"{IDS[0]}.png").write_bytes(data)
        before = files_under(root)
        res = run_cli(["data", "check", "--data", f"voc:{root}"])
        check_outcome(
            res, before, files_under(root), None, allowed=(0, 1, 2), explain=lambda: repr(data[:100])
        )
        if res.code == 1:
            assert "error:" not in res.err
