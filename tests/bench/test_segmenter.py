"""EngineSegmenter keeps one device: its inputs go where the engine works, logits come back there, so
the sliding-window sum never mixes CUDA logits into a CPU tensor."""

from __future__ import annotations

import types
from typing import Any

import numpy as np
import pytest
import torch

from zsplg_fast.bench.segmenter import EngineSegmenter, engine_device
from zsplg_fast.train.evaluate import predict


class Engine:
    """A 2-class 'segmenter': class 1 where the first channel is positive; logits on ``device``."""

    def __init__(self, device: str, as_numpy: bool = False) -> None:
        self.device, self.as_numpy = device, as_numpy
        self.seen: list[str] = []

    def __call__(self, feeds: dict[str, Any]) -> dict[str, Any]:
        x = feeds["image"]
        self.seen.append(str(x.device))
        logits = torch.cat([-x[:, :1], x[:, :1]], dim=1) * 4
        return {"logits": logits.numpy() if self.as_numpy else logits.to(self.device)}


def test_engine_device() -> None:
    assert engine_device(types.SimpleNamespace(device="cuda:1")) == torch.device("cuda:1")
    assert engine_device(types.SimpleNamespace(device="cpu")) == torch.device("cpu")
    assert engine_device(object()) == torch.device("cpu")


@pytest.mark.parametrize("as_numpy", [False, True])
def test_sliding_window_on_a_cpu_engine(as_numpy: bool) -> None:
    torch.manual_seed(0)
    img = torch.randn(1, 3, 50, 70)
    seg = EngineSegmenter(Engine("cpu", as_numpy), 2)
    assert next(seg.parameters()).device == torch.device("cpu")
    probs = predict(seg, img, "sliding_window", 32)
    want = (img[0, 0] > 0).long()
    assert probs.device == img.device and torch.equal(probs.argmax(1)[0], want)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (a CUDA engine's logits)")
def test_sliding_window_on_a_cuda_engine_stays_on_the_gpu() -> None:
    engine = Engine("cuda:0")
    seg = EngineSegmenter(engine, 2)
    assert next(seg.parameters()).device.type == "cuda"
    img = torch.randn(1, 3, 50, 70).to("cuda:0")
    probs = predict(seg, img, "sliding_window", 32)
    assert probs.is_cuda and set(engine.seen) == {"cuda:0"}
    assert np.array_equal(probs.argmax(1)[0].cpu().numpy(), (img[0, 0] > 0).cpu().numpy())
