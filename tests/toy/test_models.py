"""The shipped toy SAM and CLIP do their jobs on held-out images of the toy world.

Thresholds are the measured held-out figures (manifest.json) minus slack for the small sample here.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from zsplg_fast.toy.clip import ToyTokenizer
from zsplg_fast.toy.evaluate import (
    amg_masks,
    amg_precision_recall,
    clip_mask_accuracy,
    held_out,
    sam_point_miou,
)
from zsplg_fast.toy.report import load_toy_models, recommended, settings_from


@pytest.fixture(scope="module")
def toy() -> tuple:
    torch.set_num_threads(1)
    return load_toy_models()


@pytest.fixture(scope="module")
def samples() -> list:
    return held_out(8)


def test_sam_point_prompts_segment_objects(toy: tuple, samples: list) -> None:
    r = sam_point_miou(toy[0], samples)
    assert r["miou_best"] > 0.6, r
    assert r["hit50"] > 0.6, r


def test_sam_amg_finds_objects(toy: tuple, samples: list) -> None:
    amg, _ = settings_from(recommended())
    pr = amg_precision_recall(samples[:3], amg_masks(toy[0], samples[:3], amg))
    assert pr["recall"] >= 0.5, pr
    assert pr["precision"] >= 0.4, pr


def test_clip_dense_features_name_gt_masks(toy: tuple, samples: list) -> None:
    _, clip = settings_from(recommended())
    r = clip_mask_accuracy(toy[1], toy[2], samples, clip)
    assert r["n"] >= 15
    assert r["acc"] > 1 / 6 + 0.35, r  # chance is 1/6


def test_tokenizer_layout() -> None:
    tok = ToyTokenizer(8)
    ids = tok(["a photo of a star.", "zebra " * 20])
    assert ids.shape == (2, 8) and ids.dtype == torch.int64
    assert int(ids[0].argmax()) == 6 and int(ids[0, 6]) == tok.eot  # <sot> a photo of a star <eot>
    assert int(ids[1, -1]) == tok.eot and int(ids[1, 1]) == ToyTokenizer.UNK
    assert np.all(ids[0, 7:].numpy() == 0)
