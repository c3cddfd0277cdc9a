"""Mask pooling against hand-made masks and features whose answers are known."""

from __future__ import annotations

import pytest
import torch

from zsplg_fast.errors import FeedError
from zsplg_fast.labeling.pooling import pool_masks, resize_masks_area


def test_resize_integer_ratio_is_block_fraction() -> None:
    m = torch.zeros(1, 4, 4, dtype=torch.bool)
    m[0, 0, 0] = True  # 1 of 4 pixels in the top-left 2x2 block
    m[0, 2:, 2:] = True  # the whole bottom-right block
    r = resize_masks_area(m, (2, 2))
    assert r.dtype == torch.float32
    torch.testing.assert_close(r[0], torch.tensor([[0.25, 0.0], [0.0, 1.0]]))


def test_resize_non_integer_ratio_exact_area() -> None:
    # 3 pixels -> 2 cells: cell 0 covers pixel 0 fully and half of pixel 1.
    m = torch.tensor([[[1.0, 1.0, 0.0]]])  # (1, 1, 3)
    r = resize_masks_area(m, (1, 2))
    torch.testing.assert_close(r, torch.tensor([[[1.0, 1.0 / 3.0]]]))  # (1 + 0.5)/1.5, 0.5/1.5
    # Totals are preserved: mean over cells equals mean over pixels.
    x = torch.rand(5, 7, 11)
    r = resize_masks_area(x, (3, 4))
    torch.testing.assert_close(r.mean(dim=(1, 2)), x.mean(dim=(1, 2)), rtol=1e-5, atol=1e-6)
    assert float(r.min()) >= 0.0 and float(r.max()) <= 1.0


def test_resize_upsampling_repeats_values() -> None:
    m = torch.tensor([[[True, False], [False, True]]])
    r = resize_masks_area(m, (4, 4))
    torch.testing.assert_close(r[0], torch.kron(torch.eye(2), torch.ones(2, 2)))


def test_pool_masks_known_answers() -> None:
    # Features 2 x 2 x 2: channel 0 = cell index, channel 1 = constant 5.
    feats = torch.stack([torch.arange(4.0).reshape(2, 2), torch.full((2, 2), 5.0)])
    masks = torch.zeros(4, 4, 4, dtype=torch.bool)
    masks[0] = True  # whole image: mean of 0..3 = 1.5
    masks[1, :2, 2:] = True  # exactly cell (0, 1): value 1
    masks[2, 0, 0] = True  # quarter of cell 0 only: value 0
    masks[2, 2:, 2:] = True  # plus all of cell 3: weights 0.25 and 1 -> 3 / 1.25 = 2.4
    # masks[3] stays empty -> zeros
    out = pool_masks(masks, feats)
    expected = torch.tensor([[1.5, 5.0], [1.0, 5.0], [2.4, 5.0], [0.0, 0.0]])
    torch.testing.assert_close(out, expected)


def test_pool_masks_matches_direct_weighted_mean() -> None:
    g = torch.Generator().manual_seed(0)
    feats = torch.randn(8, 5, 6, generator=g, dtype=torch.float64)
    masks = torch.rand(3, 10, 12, generator=g) > 0.5
    out = pool_masks(masks, feats)
    assert out.shape == (3, 8) and out.dtype == torch.float64
    for k in range(3):
        wgt = masks[k].double().reshape(5, 2, 6, 2).mean(dim=(1, 3))  # area fraction per cell
        ref = (feats * wgt).sum(dim=(1, 2)) / wgt.sum()
        torch.testing.assert_close(out[k], ref)


def test_pool_masks_rejects_bad_shapes() -> None:
    with pytest.raises(FeedError, match="features"):
        pool_masks(torch.ones(1, 4, 4), torch.ones(4, 4))
    with pytest.raises(FeedError, match="masks"):
        pool_masks(torch.ones(4, 4), torch.ones(2, 4, 4))
