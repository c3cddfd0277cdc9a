"""Overlays and sample grids: colours where the classes are, legends, sizes, errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from zsplg_fast.data import VOC_PALETTE
from zsplg_fast.errors import LabelFormatError
from zsplg_fast.viz import (
    GridItem,
    blend,
    colour_mask,
    full_palette,
    grid,
    overlay,
    present_classes,
    write_grid,
    write_overlay,
)

NAMES = ["background", "circle", "square"]


def _scene() -> tuple[np.ndarray, np.ndarray]:
    image = np.full((40, 60, 3), 200, np.uint8)
    label = np.zeros((40, 60), np.uint8)
    label[10:20, 10:30] = 2
    label[0, :] = 255
    return image, label


def test_blend_colours_classes_and_keeps_ignore() -> None:
    image, label = _scene()
    out = blend(image, label, alpha=1.0)
    np.testing.assert_array_equal(out[15, 15], VOC_PALETTE[2])
    np.testing.assert_array_equal(out[30, 50], VOC_PALETTE[0])
    np.testing.assert_array_equal(out[0, 5], image[0, 5])  # ignore pixels are not painted
    half = blend(image, label, alpha=0.5)
    np.testing.assert_array_equal(
        half[15, 15], ((image[15, 15].astype(int) + VOC_PALETTE[2]) / 2 + 0.5).astype(int)
    )


def test_colour_mask_ignore_is_white_and_palette_padding() -> None:
    _, label = _scene()
    rgb = colour_mask(label, [[1, 2, 3], [4, 5, 6], [7, 8, 9]])
    assert tuple(rgb[0, 0]) == (255, 255, 255) and tuple(rgb[15, 15]) == (7, 8, 9)
    assert full_palette([[1, 2, 3]]).shape == (256, 3)


def test_overlay_adds_a_legend_strip_below() -> None:
    image, label = _scene()
    out = overlay(image, label, NAMES)
    assert out.shape[1] == 60 and out.shape[0] > 40 and out.dtype == np.uint8
    np.testing.assert_array_equal(out[:40], blend(image, label))
    assert present_classes(label) == [0, 2, 255]


def test_grid_rows_columns_and_files(tmp_path: Path) -> None:
    image, label = _scene()
    items = [GridItem(image, label, label, "a"), GridItem(image, label, None, "b")]
    g = grid(items, NAMES, cell=64)
    assert g.shape[1] == 3 * (64 + 4) + 4  # image | prediction | ground truth
    only_pred = grid([GridItem(image, label)], NAMES, cell=64)
    assert only_pred.shape[1] == 2 * (64 + 4) + 4
    p = write_grid(tmp_path / "grid.png", items, NAMES, cell=64)
    q = write_overlay(tmp_path / "o" / "x.png", image, label, NAMES)
    for path in (p, q):
        with Image.open(path) as im:
            assert im.format == "PNG" and im.mode == "RGB"


def test_mismatched_shapes_refused() -> None:
    image, label = _scene()
    with pytest.raises(LabelFormatError):
        blend(image, label[:10])
    with pytest.raises(LabelFormatError):
        grid([GridItem(image, label, label[:5])], NAMES)
    with pytest.raises(LabelFormatError):
        grid([], NAMES)
