"""``sam2_encoder``: SAM 2's image encoder (Hiera trunk + FPN neck) as ``SAM2ImagePredictor.set_image``
leaves it for the decoder.

Input: ``image`` (B, 3, S, S) float32, as ``SAM2Transforms`` makes it: ToTensor (0..1), Resize((S, S))
(bilinear, antialias; the aspect ratio is NOT kept and nothing is padded), Normalize(ImageNet mean/std).
Outputs (follows sam2 ``SAM2Base.forward_image`` + ``_prepare_backbone_features`` + ``set_image``):
``image_embed`` (B, C, S/16, S/16) float32 (the lowest-resolution FPN level + ``no_mem_embed``),
``high_res_feats_0`` (B, C/8, S/4, S/4) and ``high_res_feats_1`` (B, C/4, S/8, S/8) float32 (levels 0
and 1 through the mask decoder's ``conv_s0`` / ``conv_s1``). S = 1024 and C = 256 for the official models.
"""

from __future__ import annotations

import torch
from torch import nn

from zsplg_fast.export.specs.base import ExportSpec, Prepared, randn, seeded
from zsplg_fast.export.tensors import AxisRange, TensorSpec, Tolerance
from zsplg_fast.models.sam2 import sam2_info

ENCODER_OUTPUTS = ("image_embed", "high_res_feats_0", "high_res_feats_1")
_TOL = Tolerance(atol=1e-4, rtol=1e-4, min_cosine=0.99999)


class Sam2Encoder(nn.Module):
    """image (B, 3, S, S) float32 normalised → image_embed, high_res_feats_0, high_res_feats_1."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.image_encoder = model.image_encoder
        md = model.sam_mask_decoder
        self.conv_s0, self.conv_s1 = md.conv_s0, md.conv_s1
        self.levels = int(model.num_feature_levels)
        self.add_no_mem = bool(model.directly_add_no_mem_embed)
        self.no_mem_embed = model.no_mem_embed  # (1, 1, C)

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        fpn = list(self.image_encoder(image)["backbone_fpn"])
        fpn[0], fpn[1] = self.conv_s0(fpn[0]), self.conv_s1(fpn[1])
        feats = fpn[-self.levels :]
        if self.add_no_mem:  # set_image adds it to the flattened (HW, B, C) map; same sum per element
            feats[-1] = feats[-1] + self.no_mem_embed.reshape(1, -1, 1, 1)
        return feats[-1], feats[0], feats[1]


def encoder_output_specs(model: nn.Module, batch: int | str = "batch") -> tuple[TensorSpec, ...]:
    """The three encoder outputs' declarations (also the decoders' per-image inputs, batch 1)."""
    info = sam2_info(model)
    g, c = info.embedding_size, info.hidden_dim
    c0, c1 = info.high_res_channels
    return (
        TensorSpec("image_embed", "float32", (batch, c, g, g)),
        TensorSpec("high_res_feats_0", "float32", (batch, c0, 4 * g, 4 * g)),
        TensorSpec("high_res_feats_1", "float32", (batch, c1, 2 * g, 2 * g)),
    )


def sam2_metadata(model: nn.Module) -> dict:
    """Sidecar facts: preprocessing (SAM2Transforms) and sizes."""
    info = sam2_info(model)
    return {
        "preprocessing": {
            "size": info.img_size,
            "resize": "both sides to size (torchvision Resize((S, S)), bilinear, antialias), no padding",
            "mean": list(info.pixel_mean),
            "std": list(info.pixel_std),
            "scale": "0..1",
        },
        "sam2": {
            "img_size": info.img_size,
            "embedding_size": info.embedding_size,
            "hidden_dim": info.hidden_dim,
            "high_res_channels": list(info.high_res_channels),
        },
    }


def prepare_sam2_encoder(model: nn.Module, validation_batches: tuple[int, ...] | None = None) -> Prepared:
    """Bind ``sam2_encoder``: dummy batch 2; validation batches (1, 3) for S ≤ 512, else (1,)."""
    s = sam2_info(model).img_size
    gen = seeded(11)
    batches = validation_batches or ((1, 3) if s <= 512 else (1,))
    return Prepared(
        module=Sam2Encoder(model).eval(),
        inputs=(TensorSpec("image", "float32", ("batch", 3, s, s), allow_float64=True),),
        outputs=encoder_output_specs(model),
        dummy={"image": randn((2, 3, s, s), gen)},
        validation=[{"image": randn((b, 3, s, s), gen)} for b in batches],
        tolerances={n: _TOL for n in ENCODER_OUTPUTS},
        profiles={"batch": AxisRange(1, 1, 8)},
        metadata=sam2_metadata(model),
        options={"validation_batches": list(batches)},
    )


SAM2_ENCODER = ExportSpec(
    "sam2_encoder",
    "sam2",
    "SAM 2 image encoder (Hiera + FPN): (B,3,S,S) → image_embed (B,C,S/16,S/16) + 2 high-res maps",
    prepare_sam2_encoder,
    exporter="dynamo",
    exporter_reason="dynamo: Hiera's window partitions keep a symbolic batch",
)
