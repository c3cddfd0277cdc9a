"""Segmenter inference on one image, exactly as evaluation does it, on any Engine.

:class:`EngineSegmenter` wraps a ``segmenter`` engine (input ``image`` (B, 3, H, W) float32 normalised,
output ``logits`` (B, C, H, W)) as an ``nn.Module``, so the training engineer's evaluation
(:func:`zsplg_fast.train.evaluate.predict` / ``evaluate_model``, UniMatch protocol) runs it unchanged.
:func:`predict_label` is the one image path (uint8 RGB → ImageNet-normalised tensor, as ``ValSet`` →
``predict`` → argmax) shared by the ``segmenter_image`` benchmark case, ``deploy`` and ``infer --backend
torch | trt``; ``infer --backend ort`` (and ``zsplg-runtime``) run the same steps in numpy
(:mod:`zsplg_runtime.preprocess`), with the same labels (tests/runtime/test_runtime.py), so ``infer``
predicts what ``evaluate`` scores.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn

from zsplg_fast.errors import FeedError
from zsplg_fast.train import transforms as T
from zsplg_fast.train.evaluate import predict


class EngineSegmenter(nn.Module):
    """A segmenter Engine as a module: ``forward(image (B, 3, H, W) float32) -> logits (B, C, H, W)``.

    ``config.num_classes`` is set (sliding-window evaluation reads it); a zero-size parameter on the
    engine's device (:func:`engine_device`) tells ``evaluate_model`` where to put its inputs, and the
    logits come back on the input's device, so sliding-window sums never mix CUDA and CPU tensors.
    """

    def __init__(self, engine: Any, num_classes: int, input_name: str = "image", output_name: str = "logits"):
        super().__init__()
        self.engine = engine
        self.config = SimpleNamespace(num_classes=int(num_classes))
        self.input_name, self.output_name = input_name, output_name
        self._where = nn.Parameter(torch.zeros(0, device=engine_device(engine)), requires_grad=False)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        out = self.engine({self.input_name: image.detach().float().contiguous()})[self.output_name]
        logits = torch.from_numpy(np.asarray(out)) if isinstance(out, np.ndarray) else out
        if logits.ndim != 4 or logits.shape[1] != self.config.num_classes:
            raise FeedError(
                self.output_name,
                f"(B, {self.config.num_classes}, H, W) logits",
                f"shape {tuple(logits.shape)}",
            )
        return logits.to(image.device).float()


def engine_device(engine: Any) -> torch.device:
    """The torch device an engine works on: ``cuda:N`` for GPU engines, else the CPU."""
    device = str(getattr(engine, "device", "cpu"))
    return torch.device(device if device.startswith("cuda") else "cpu")


def num_classes_of(model: nn.Module) -> int:
    """C of a DeepLabV3+ or an :class:`EngineSegmenter`."""
    return int(model.config.num_classes)


def to_input(image: np.ndarray) -> torch.Tensor:
    """(H, W, 3) uint8 RGB → (1, 3, H, W) float32 ImageNet-normalised, as ``ValSet`` prepares images."""
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise FeedError("image", "(H, W, 3) uint8 RGB", f"{image.dtype} {tuple(image.shape)}")
    return T.normalize(Image.fromarray(image)).unsqueeze(0)


@torch.no_grad()
def predict_label(
    model: nn.Module, image: np.ndarray, mode: str = "original", window: int = 321
) -> np.ndarray:
    """(H, W, 3) uint8 RGB → (H, W) uint8 class map with ``train.evaluate.predict`` (argmax of the
    class probabilities). ``model``: a DeepLabV3+ or an :class:`EngineSegmenter`."""
    device = next(model.parameters()).device
    probs = predict(model, to_input(image).to(device), mode, window)
    return probs.argmax(dim=1)[0].to(torch.uint8).cpu().numpy()
