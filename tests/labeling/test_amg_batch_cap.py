"""The mask generator never sends a decoder more prompts than its plan's profile allows (a batched
decoder plan built for 256 refuses the 1024 prompts a large GPU's automatic batch picks)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from zsplg_fast.bench.synthetic_sam import build_colour_sam, sam_module_engines
from zsplg_fast.config.labeling import AmgConfig
from zsplg_fast.engines.trt import check_profile
from zsplg_fast.labeling import amg_ops as ops
from zsplg_fast.labeling.amg import MaskGenerator
from zsplg_fast.labeling.amg_ops import engine_max_batch

PROFILE = ((1, 1, 2), (8, 1, 2), (16, 4, 2))


class PlanLike:
    """A decoder engine with a TensorRT-style profile: refuses batches outside it, as TrtEngine does."""

    def __init__(self, inner: Any) -> None:
        self.inner, self.inputs, self.outputs, self.device = inner, inner.inputs, inner.outputs, inner.device
        self.profiles = {"point_coords": PROFILE}
        self.batches: list[int] = []

    def __call__(self, feeds: dict[str, Any]) -> dict[str, Any]:
        shape = tuple(feeds["point_coords"].shape)
        check_profile("point_coords", shape, PROFILE)
        self.batches.append(shape[0])
        return self.inner(feeds)


def test_engine_max_batch() -> None:
    assert engine_max_batch(PlanLike.__new__(PlanLike)) is None  # no profiles attribute set yet
    assert engine_max_batch(type("E", (), {"profiles": {"point_coords": PROFILE}})()) == 16
    assert engine_max_batch(type("E", (), {"profiles": {}})()) is None


def test_prompt_batch_is_capped_at_the_plan_profile(monkeypatch: Any) -> None:
    torch.set_num_threads(1)
    sam = build_colour_sam(128)
    enc, dec = sam_module_engines(sam)
    cfg = AmgConfig(points_per_side=8, pred_iou_thresh=0.0, stability_score_thresh=0.6)
    rng = np.random.default_rng(0)
    img = np.zeros((96, 128, 3), np.uint8) + rng.integers(0, 255, 3, dtype=np.uint8)
    img[20:60, 30:90] = rng.integers(0, 255, 3, dtype=np.uint8)
    want = MaskGenerator(enc, dec, cfg, prompt_batch=64).generate_tensors(img)
    plan = PlanLike(dec)
    got = MaskGenerator(enc, plan, cfg, prompt_batch=1024).generate_tensors(img)
    assert max(plan.batches) == 16 and sum(plan.batches) == 64  # 8x8 points in calls of <= 16
    assert torch.equal(got.masks, want.masks)
    # the automatic batch (what a large GPU picks) is capped too
    monkeypatch.setattr(ops, "default_prompt_batch", lambda *a, **k: 1024)
    plan.batches.clear()
    gen = MaskGenerator(enc, plan, cfg)
    gen.generate_tensors(img)
    assert gen.batch_used == 16 and max(plan.batches) == 16
