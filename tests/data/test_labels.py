"""Label IO: palette PNG round trip, refusals naming file and values, size-mismatch errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from zsplg_fast.data.labels import VOC_PALETTE, check_pair, colorize, read_label, write_label
from zsplg_fast.errors import LabelFormatError

LABEL = np.array([[0, 1, 2, 255], [20, 0, 3, 1]], np.uint8)


def test_voc_palette_known_entries() -> None:
    assert VOC_PALETTE.shape == (256, 3) and VOC_PALETTE.dtype == np.uint8
    assert VOC_PALETTE[0].tolist() == [0, 0, 0]
    assert VOC_PALETTE[1].tolist() == [128, 0, 0]
    assert VOC_PALETTE[2].tolist() == [0, 128, 0]
    assert VOC_PALETTE[15].tolist() == [192, 128, 128]  # person
    assert VOC_PALETTE[20].tolist() == [0, 64, 128]  # tvmonitor
    assert VOC_PALETTE[255].tolist() == [224, 224, 192]  # ignore / boundary
    assert len({tuple(c) for c in VOC_PALETTE.tolist()}) == 256


def test_write_read_roundtrip_is_palette_png(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "x.png"
    write_label(path, LABEL)
    with Image.open(path) as img:
        assert img.format == "PNG" and img.mode == "P"
        assert img.getpalette()[3:6] == [128, 0, 0]
    out = read_label(path, num_classes=21)
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, LABEL)
    assert not list(path.parent.glob(".*.tmp"))


def test_single_channel_l_png_accepted(tmp_path: Path) -> None:
    path = tmp_path / "l.png"
    Image.fromarray(LABEL, "L").save(path)
    np.testing.assert_array_equal(read_label(path), LABEL)


@pytest.mark.parametrize("bad", [LABEL.astype(np.int32), LABEL[None], np.zeros((2, 2, 3), np.uint8)])
def test_write_refuses_non_uint8_or_non_2d(tmp_path: Path, bad: np.ndarray) -> None:
    with pytest.raises(LabelFormatError, match="2-D uint8"):
        write_label(tmp_path / "x.png", bad)
    assert not (tmp_path / "x.png").exists()


def test_rgb_coded_label_refused(tmp_path: Path) -> None:
    path = tmp_path / "rgb.png"
    Image.fromarray(colorize(LABEL)).save(path)
    with pytest.raises(LabelFormatError, match=r"rgb\.png.*RGB-coded") as ei:
        read_label(path)
    assert ei.value.path == str(path)


@pytest.mark.parametrize("name", ["lab.jpg", "lab.png"])  # content decides, not the extension
def test_jpeg_label_refused_by_content(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    Image.fromarray(LABEL, "L").save(path, format="JPEG")
    with pytest.raises(LabelFormatError, match=rf"{name}.*JPEG"):
        read_label(path)


def test_out_of_range_values_listed(tmp_path: Path) -> None:
    path = tmp_path / "x.png"
    write_label(path, LABEL)
    with pytest.raises(LabelFormatError, match=r"x\.png.*0\.\.2 .*offending values: \[3, 20\]") as ei:
        read_label(path, num_classes=3)
    assert ei.value.values == [3, 20]
    assert read_label(path, num_classes=21)[0, 3] == 255  # 255 is always allowed


def test_missing_empty_truncated_label(tmp_path: Path) -> None:
    with pytest.raises(LabelFormatError, match="no such label file"):
        read_label(tmp_path / "nope.png")
    (tmp_path / "e.png").write_bytes(b"")
    with pytest.raises(LabelFormatError, match="empty"):
        read_label(tmp_path / "e.png")
    big = np.random.default_rng(0).integers(0, 21, (200, 200), dtype=np.uint8)
    write_label(tmp_path / "t.png", big)
    data = (tmp_path / "t.png").read_bytes()
    (tmp_path / "t.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(LabelFormatError, match=r"t\.png.*(truncated|corrupt)"):
        read_label(tmp_path / "t.png")


def test_check_pair_names_both_files_and_sizes() -> None:
    check_pair("img.jpg", (4, 6), "lab.png", (4, 6))
    with pytest.raises(LabelFormatError) as ei:
        check_pair("a/img.jpg", (480, 640), "b/lab.png", (500, 375))
    msg = str(ei.value)
    for part in ("a/img.jpg", "b/lab.png", "480x640", "500x375"):
        assert part in msg


def test_colorize() -> None:
    rgb = colorize(LABEL)
    assert rgb.shape == (2, 4, 3) and rgb.dtype == np.uint8
    assert rgb[0, 1].tolist() == [128, 0, 0] and rgb[0, 3].tolist() == [224, 224, 192]
    with pytest.raises(LabelFormatError):
        colorize(np.array([[300]]))
