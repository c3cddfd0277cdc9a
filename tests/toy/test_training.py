"""A few training steps of each toy model are deterministic for a seed (and differ across seeds)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from zsplg_fast.data.synthetic import render_sample
from zsplg_fast.models.segmenter import build_segmenter
from zsplg_fast.toy.train_backbone import MEAN, STD, STREAM, BackboneTrainConfig, make_batch, train_backbone
from zsplg_fast.toy.train_clip import ClipTrainConfig, train_clip
from zsplg_fast.toy.train_sam import SamTrainConfig, train_sam


def _same(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    return all(
        torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True)
    )


def test_sam_training_is_deterministic() -> None:
    cfg = dict(steps=2, images_per_step=2, points_per_image=3, boxes_per_image=1, warmup=1)
    a, sa = train_sam(SamTrainConfig(seed=1, **cfg))
    b, _ = train_sam(SamTrainConfig(seed=1, **cfg))
    c, _ = train_sam(SamTrainConfig(seed=2, **cfg))
    assert _same(a, b) and not _same(a, c)
    assert sa["history"][-1]["step"] == 2


def test_clip_training_is_deterministic() -> None:
    cfg = dict(steps=2, text_steps=1, joint_steps=1, batch=4, pool_size=4, refresh=1, warmup=1)
    a, _, sa = train_clip(ClipTrainConfig(seed=1, **cfg))
    b, _, _ = train_clip(ClipTrainConfig(seed=1, **cfg))
    c, _, _ = train_clip(ClipTrainConfig(seed=2, **cfg))
    assert _same(a, b) and not _same(a, c)
    assert sa["history"][-1]["loss"] > 0


def test_backbone_pretraining_is_deterministic_and_writes_a_loadable_backbone(tmp_path: Path) -> None:
    cfg = dict(steps=2, batch=4, image_size=64, log_every=1)
    a, sa = train_backbone(BackboneTrainConfig(seed=1, **cfg), tmp_path)
    b, _ = train_backbone(BackboneTrainConfig(seed=1, **cfg))
    c, _ = train_backbone(BackboneTrainConfig(seed=2, **cfg))
    assert _same(a, b) and not _same(a, c)
    assert json.loads((tmp_path / "backbone_train.json").read_text())["config"]["steps"] == 2
    seg = build_segmenter("tiny", 7, pretrained=tmp_path / "backbone_toy.pth")
    assert _same(seg.backbone, a) and sa["history"][-1]["loss"] > 0


def test_make_batch_targets_are_the_one_shape_shown() -> None:
    x, t = make_batch(0, 0, 6, 96, 6)
    assert x.shape == (6, 3, 96, 96) and t.shape == (6,) and t.dtype == torch.int64
    assert ((t >= 0) & (t < 6)).all() and len(set(t.tolist())) > 1
    for j in range(6):  # each target is the one shape rendered in that image
        s = render_sample(np.random.default_rng([0, STREAM, 0, j]), (96, 96), 6, max_objects=1)
        assert set(np.unique(s.label)) == {0, int(t[j]) + 1}
        img = torch.from_numpy(s.image).permute(2, 0, 1).float() / 255.0
        assert torch.allclose(x[j] * STD[0] + MEAN[0], img, atol=1e-5)
