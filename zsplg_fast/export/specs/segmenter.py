"""``segmenter``: the DeepLabV3+ student, (B, 3, H, W) → logits (B, C, H, W), B, H and W dynamic.

Input ``image`` float32 normalised with ImageNet mean/std on the 0..1 scale. Output ``logits`` float32
(argmax over C gives the label map). Class names and the palette go in the sidecar.
The module is :func:`zsplg_fast.models.segmenter.build_segmenter`'s ``DeepLabV3Plus`` (no second copy).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from zsplg_fast.data import VOC_PALETTE
from zsplg_fast.export.specs.base import ExportSpec, Prepared, randn, seeded
from zsplg_fast.export.tensors import AxisRange, TensorSpec, Tolerance

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class Segmenter(nn.Module):
    """image (B, 3, H, W) float32 normalised → logits (B, C, H, W) float32."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.model(image)


def prepare_segmenter(model: nn.Module, class_names: Sequence[str] | None = None) -> Prepared:
    """Bind ``segmenter`` to a DeepLabV3+; class names from the argument, else ``model.class_names``.

    Dummy (2, 3, 384, 448); validation (1, 3, 320, 480) and (7, or 3 when large, 3, 512, 512).
    """
    cfg = getattr(model, "config", None)
    num_classes = int(model.classifier.out_channels)
    names = list(class_names or getattr(model, "class_names", None) or [str(i) for i in range(num_classes)])
    names = [n[0] if isinstance(n, (list, tuple)) else str(n) for n in names]
    small = sum(p.numel() for p in model.parameters()) < 5_000_000
    gen = seeded(5)
    return Prepared(
        module=Segmenter(model).eval(),
        inputs=(TensorSpec("image", "float32", ("batch", 3, "height", "width"), allow_float64=True),),
        outputs=(TensorSpec("logits", "float32", ("batch", num_classes, "height", "width")),),
        dummy={"image": randn((2, 3, 384, 448), gen)},
        validation=[
            {"image": randn((1, 3, 320, 480), gen)},
            {"image": randn((7 if small else 3, 3, 512, 512), gen)},
        ],
        tolerances={"logits": Tolerance(atol=1e-3, rtol=1e-4, min_cosine=0.99999)},
        profiles={
            "batch": AxisRange(1, 1, 8),
            "height": AxisRange(256, 512, 1024),
            "width": AxisRange(256, 512, 1024),
        },
        dim_bounds={"height": (32, 4096), "width": (32, 4096)},
        metadata={
            "preprocessing": {"mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD), "scale": "0..1"},
            "class_names": names,
            "palette": VOC_PALETTE[:num_classes].tolist(),
            "segmenter": {"backbone": getattr(cfg, "backbone", None), "num_classes": num_classes},
        },
    )


SEGMENTER = ExportSpec(
    "segmenter",
    "segmenter",
    "DeepLabV3+ student: (B,3,H,W) normalised → (B,C,H,W) logits, B/H/W dynamic",
    prepare_segmenter,
    exporter="dynamo",
    exporter_reason="dynamo: symbolic H/W through the strided backbone; legacy also validates",
)
