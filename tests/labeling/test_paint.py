import numpy as np
import pytest
import torch

from zsplg_fast.labeling.paint import paint


def _masks(*boxes, hw=(8, 8)):
    out = torch.zeros((len(boxes), *hw), dtype=torch.bool)
    for k, (y0, y1, x0, x1) in enumerate(boxes):
        out[k, y0:y1, x0:x1] = True
    return out


def test_small_masks_win_regardless_of_input_order():
    big = (0, 8, 0, 8)
    small = (2, 4, 2, 4)
    for order in ((big, small), (small, big)):
        m = _masks(*order)
        cls = torch.tensor([3, 7]) if order[0] == big else torch.tensor([7, 3])
        lab = paint(m, cls)
        assert lab.dtype == np.uint8 and lab.shape == (8, 8)
        assert (lab[2:4, 2:4] == 7).all()
        assert (lab == 3).sum() == 64 - 4


def test_uncovered_policy_background_or_ignore():
    m = _masks((0, 2, 0, 2))
    cls = torch.tensor([5])
    bg = paint(m, cls, uncovered="background")
    ig = paint(m, cls, uncovered="ignore")
    assert (bg[:2, :2] == 5).all() and (bg[2:] == 0).all()
    assert (ig[:2, :2] == 5).all() and (ig[2:] == 255).all()


def test_background_masks_cover_pixels_with_zero():
    m = _masks((0, 4, 0, 4))
    lab = paint(m, torch.tensor([0]), uncovered="ignore")
    assert (lab[:4, :4] == 0).all() and (lab[4:] == 255).all()


def test_no_masks_and_bad_shapes():
    lab = paint(torch.zeros((0, 3, 5), dtype=torch.bool), torch.zeros(0, dtype=torch.int64), "ignore")
    assert lab.shape == (3, 5) and (lab == 255).all()
    with pytest.raises(ValueError, match="2 masks but 1 classes"):
        paint(_masks((0, 1, 0, 1), (0, 2, 0, 2)), torch.tensor([1]))
    with pytest.raises(ValueError, match="uncovered"):
        paint(_masks((0, 1, 0, 1)), torch.tensor([1]), uncovered="nothing")
