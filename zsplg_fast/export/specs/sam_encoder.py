"""``sam_encoder`` and ``sam_encoder_preprocess``: SAM's image encoder.

- ``sam_encoder``: ``image`` (B, 3, S, S) float32, normalised and padded as ``SamPredictor`` does
  (resize long side to S, (x - mean) / std on the 0..255 scale, zero-pad bottom/right) →
  ``image_embeddings`` (B, C, S/16, S/16) float32. S = 1024 and C = 256 for the official variants.
- ``sam_encoder_preprocess`` (``--with-preprocess``): ``image`` (H, W, 3) uint8 RGB already resized so
  that max(H, W) == S → ``image_embeddings`` (1, C, S/16, S/16); normalising and padding run in the graph.
  Follows upstream ``ImageEncoderOnnxModel.preprocess`` (segment-anything main, utils/onnx.py).

Exported with dynamo: the legacy exporter needs ~9.5 GB RAM for vit_b (shared measurements).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from segment_anything.modeling import Sam
from torch import nn

from zsplg_fast.export.specs.base import ExportSpec, Prepared, randn, seeded
from zsplg_fast.export.tensors import AxisRange, TensorSpec, Tolerance
from zsplg_fast.models import sam_info

_REASON = "dynamo: legacy tracing of the ViT encoder needs ~7x the RAM (9.5 GB for vit_b)"
_TOL = Tolerance(atol=1e-4, rtol=1e-4, min_cosine=0.99999)


class SamEncoder(nn.Module):
    """image (B, 3, S, S) float32 normalised+padded → image_embeddings (B, C, S/16, S/16) float32."""

    def __init__(self, sam: Sam) -> None:
        super().__init__()
        self.image_encoder = sam.image_encoder

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.image_encoder(image)


class SamEncoderPreprocess(nn.Module):
    """image (H, W, 3) uint8 RGB, max(H, W) == S → image_embeddings (1, C, S/16, S/16) float32.

    Same arithmetic as ``Sam.preprocess``: normalise with the model's pixel mean/std, pad to S×S.
    """

    def __init__(self, sam: Sam) -> None:
        super().__init__()
        self.image_encoder = sam.image_encoder
        self.img_size = int(sam.image_encoder.img_size)
        self.register_buffer("pixel_mean", sam.pixel_mean.detach().clone().reshape(3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", sam.pixel_std.detach().clone().reshape(3, 1, 1), persistent=False)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        x = image.permute(2, 0, 1).to(torch.float32)
        x = (x - self.pixel_mean) / self.pixel_std
        h, w = x.shape[-2:]
        x = F.pad(x, (0, self.img_size - w, 0, self.img_size - h))
        return self.image_encoder(x.unsqueeze(0))


def _metadata(sam: Sam) -> dict:
    info = sam_info(sam)
    return {
        "preprocessing": {
            "size": info.img_size,
            "resize": "longest side to size (ResizeLongestSide), then pad bottom/right with zeros",
            "mean": list(info.pixel_mean),
            "std": list(info.pixel_std),
            "scale": "0..255",
        },
        "sam": {
            "img_size": info.img_size,
            "embedding_size": info.embedding_size,
            "prompt_embed_dim": info.prompt_embed_dim,
            "depth": info.depth,
            "embed_dim": info.embed_dim,
        },
    }


def prepare_encoder(sam: Sam, validation_batches: tuple[int, ...] | None = None) -> Prepared:
    """Bind ``sam_encoder`` to ``sam``.

    Args:
        validation_batches: batch sizes compared against PyTorch (default (1, 7) for S ≤ 512, else (1,):
            a vit_b forward takes ~9 s per image on 2 CPU cores). Each must differ from the dummy's 2.
    """
    info = sam_info(sam)
    s, g, c = info.img_size, info.embedding_size, info.prompt_embed_dim
    gen = seeded(0)
    batches = validation_batches or ((1, 7) if s <= 512 else (1,))
    return Prepared(
        module=SamEncoder(sam).eval(),
        inputs=(TensorSpec("image", "float32", ("batch", 3, s, s), allow_float64=True),),
        outputs=(TensorSpec("image_embeddings", "float32", ("batch", c, g, g)),),
        dummy={"image": randn((2, 3, s, s), gen)},
        validation=[{"image": randn((b, 3, s, s), gen)} for b in batches],
        tolerances={"image_embeddings": _TOL},
        profiles={"batch": AxisRange(1, 1, 8)},
        metadata=_metadata(sam),
        options={"validation_batches": list(batches)},
    )


def prepare_encoder_preprocess(sam: Sam) -> Prepared:
    """Bind ``sam_encoder_preprocess`` to ``sam``: dummy is landscape (3S/4 × S), validation portrait."""
    info = sam_info(sam)
    s, g, c = info.img_size, info.embedding_size, info.prompt_embed_dim
    gen = seeded(1)

    def img(h: int, w: int) -> torch.Tensor:
        return torch.randint(0, 256, (h, w, 3), generator=gen, dtype=torch.uint8)

    return Prepared(
        module=SamEncoderPreprocess(sam).eval(),
        inputs=(TensorSpec("image", "uint8", ("height", "width", 3)),),
        outputs=(TensorSpec("image_embeddings", "float32", (1, c, g, g)),),
        dummy={"image": img(s * 3 // 4, s)},
        validation=[{"image": img(s, s * 3 // 4)}, {"image": img(s, s * 2 // 3)}],
        tolerances={"image_embeddings": _TOL},
        profiles={"height": AxisRange(s // 2, s * 3 // 4, s), "width": AxisRange(s // 2, s, s)},
        dim_bounds={"height": (2, s), "width": (2, s)},
        metadata=_metadata(sam),
    )


SAM_ENCODER = ExportSpec(
    "sam_encoder",
    "sam",
    "SAM image encoder: (B,3,S,S) normalised+padded float32 → (B,C,S/16,S/16) embeddings",
    prepare_encoder,
    exporter="dynamo",
    exporter_reason=_REASON,
)
SAM_ENCODER_PREPROCESS = ExportSpec(
    "sam_encoder_preprocess",
    "sam",
    "SAM image encoder with in-graph preprocessing: (H,W,3) uint8, long side S → (1,C,S/16,S/16)",
    prepare_encoder_preprocess,
    exporter="dynamo",
    exporter_reason=_REASON,
)
