"""Every prompt-batched decoder kind (one-piece ``sam_decoder_batched``, shared ``sam_decoder_shared``): the
batches the mask generator sends lie inside the TensorRT profile ``build`` gives the plan, and
``export.decoder_max_batch`` is that profile's max (so the labeler sends that many prompts per call)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from zsplg_fast.config.export import ExportConfig
from zsplg_fast.config.labeling import AmgConfig
from zsplg_fast.engines.torch_engine import TorchEngine
from zsplg_fast.engines.trt import check_profile
from zsplg_fast.export.specs import get_spec
from zsplg_fast.export.tensorrt import build_profiles
from zsplg_fast.labeling import amg_ops as ops
from zsplg_fast.labeling.amg import MaskGenerator

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")  # random tiny SAM

DECODER_KINDS = ("sam_decoder_batched", "sam_decoder_shared")  # what labeling/engines.py loads


class PlanLike:
    """A decoder engine with a plan's profiles (as TrtEngine): refuses other shapes, records batches."""

    def __init__(self, inner: TorchEngine, profiles: dict[str, Any]) -> None:
        self.inner, self.inputs, self.outputs, self.device = inner, inner.inputs, inner.outputs, inner.device
        self.profiles = profiles
        self.batches: list[int] = []

    def __call__(self, feeds: dict[str, Any]) -> dict[str, Any]:
        for name, x in feeds.items():
            check_profile(name, tuple(x.shape), self.profiles.get(name))
        self.batches.append(int(feeds["point_coords"].shape[0]))
        return self.inner(feeds)


def _sidecar(p: Any, name: str) -> dict[str, Any]:
    """The ONNX sidecar fields ``build`` reads (as export/onnx.py writes them)."""
    return {
        "spec": name,
        "inputs": [s.to_dict() for s in p.inputs],
        "profiles": {k: v.to_list() for k, v in p.profiles.items()},
    }


@pytest.mark.parametrize("kind", DECODER_KINDS)
@pytest.mark.parametrize("max_batch", [ExportConfig().decoder_max_batch, 512])
@torch.inference_mode()
def test_amg_batches_lie_in_the_plan_profile(kind: str, max_batch: int, monkeypatch: Any) -> None:
    from zsplg_fast.models import build_sam

    torch.set_num_threads(1)
    sam = build_sam("tiny")
    engines = {}
    for name in ("sam_encoder", kind, *(["sam_decoder_image"] if kind == "sam_decoder_shared" else [])):
        p = get_spec(name).bind(sam, **({"validation_batches": (1,)} if name == "sam_encoder" else {}))
        engines[name] = TorchEngine(p.module, p.inputs, p.outputs)
        if name == kind:
            _, shapes = build_profiles(_sidecar(p, name), None, max_batch)
    assert shapes["point_coords"][2][0] == max_batch  # decoder_max_batch is the plan's batch max
    plan = PlanLike(engines[kind], shapes)
    monkeypatch.setattr(ops, "default_prompt_batch", lambda *a, **k: 1024)  # what a large GPU picks
    cfg = AmgConfig(points_per_side=24, pred_iou_thresh=0.0, stability_score_thresh=0.0)
    gen = MaskGenerator(engines["sam_encoder"], plan, cfg, decoder_image=engines.get("sam_decoder_image"))
    image = np.random.default_rng(0).integers(0, 255, (200, 256, 3), dtype=np.uint8)
    gen.generate_tensors(image)
    assert sum(plan.batches) == 24 * 24
    assert max(plan.batches) == min(max_batch, 24 * 24)  # the labeler sends the plan's max, never more
