"""ZeroShotLabeler: masks and classes at a capped working resolution, the label at the image's size;
the degenerate-labels warning after the first N images."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from zsplg_fast.labeling.classify import MaskClassifier
from zsplg_fast.labeling.degenerate import DegenerateWatch
from zsplg_fast.labeling.labeler import ZeroShotLabeler
from zsplg_fast.labeling.masks import MaskSet


class _LeftHalf:
    """One mask: the left half of whatever image it is given; records the sizes it saw."""

    def __init__(self) -> None:
        self.seen: list[tuple[int, int]] = []

    def __call__(self, image: np.ndarray) -> MaskSet:
        h, w = image.shape[:2]
        self.seen.append((h, w))
        m = torch.zeros((1, h, w), dtype=torch.bool)
        m[0, :, : w // 2] = True
        return MaskSet(m, torch.ones(1), torch.ones(1), torch.tensor([[0.0, 0.0, w / 2, h]]))


def _classifier(seen: list[tuple[int, int]]) -> MaskClassifier:
    def dense(x: torch.Tensor) -> torch.Tensor:
        feats = torch.zeros(x.shape[0], 2, 4, 4)
        feats[:, 1] = 1.0  # every mask is class 1 (index 0 of the text = class 1: background not prompted)
        return feats

    clf = MaskClassifier(dense, torch.eye(2)[1:], image_size=8, mean=(0, 0, 0), std=(1, 1, 1))
    features = clf.features

    def recording(image: np.ndarray) -> torch.Tensor:
        seen.append(image.shape[:2])
        return features(image)

    clf.features = recording  # type: ignore[method-assign]
    return clf


@pytest.mark.parametrize(("hw", "cap", "work"), [((300, 500), 100, (60, 100)), ((30, 50), 100, (30, 50))])
def test_working_resolution_is_capped_and_the_label_keeps_the_image_size(
    hw: tuple[int, int], cap: int, work: tuple[int, int]
) -> None:
    masks, clip_seen = _LeftHalf(), []
    labeler = ZeroShotLabeler(masks, _classifier(clip_seen), work_long_side=cap, check_first=0)
    image = np.random.default_rng(0).integers(0, 255, (*hw, 3), dtype=np.uint8)
    res = labeler(image)
    assert masks.seen == [work] and clip_seen == [work]
    assert res.label.shape == hw and res.meta["work_size"] == list(work)
    assert (res.meta["height"], res.meta["width"]) == hw
    # upsampled once, nearest: only the painted values, the left half class 1, the right half background
    assert set(np.unique(res.label).tolist()) == {0, 1}
    assert (res.label[:, : hw[1] // 2 - 2] == 1).all() and (res.label[:, hw[1] // 2 + 2 :] == 0).all()


def test_full_resolution_when_the_cap_is_off() -> None:
    masks = _LeftHalf()
    labeler = ZeroShotLabeler(masks, _classifier([]), work_long_side=0, check_first=0)
    assert labeler(np.zeros((90, 3000, 3), np.uint8)).label.shape == (90, 3000)
    assert masks.seen == [(90, 3000)]


def test_degenerate_labels_warn_with_figures_and_settings(caplog: pytest.LogCaptureFixture) -> None:
    watch = DegenerateWatch(first=2)
    flat = np.zeros((10, 10), np.uint8)
    assert watch.add(flat, 0) is None  # not before the 2nd label
    with caplog.at_level(logging.WARNING, logger="zsplg_fast.labeling"):
        msg = watch.add(flat, 0)
    assert msg is not None and msg in caplog.text
    assert "100.0 % of all pixels are class 0" in msg and "no masks were kept" in msg
    assert "clip.gem_depth" in msg and "amg.pred_iou_thresh" in msg
    assert watch.add(flat, 0) is None  # warned once
    mixed = np.zeros((10, 10), np.uint8)
    mixed[:, :3] = 2
    ok = DegenerateWatch(first=2)
    ok.add(mixed, 3)
    assert ok.add(mixed, 2) is None
