"""``sam_decoder``: the official decoder interface of segment-anything ``scripts/export_onnx_model.py``.

Inputs (all float32, as upstream): ``image_embeddings`` (1, C, g, g), ``point_coords`` (1, N, 2) in the
resized S-frame (``ResizeLongestSide.apply_coords``) with the padding point (0, 0) / label -1 appended
by the caller when there is no box, ``point_labels`` (1, N) in {-1, 0, 1, 2, 3}, ``mask_input``
(1, 1, 4g, 4g), ``has_mask_input`` (1,) in {0, 1}, ``orig_im_size`` (2,) = (H, W).
Outputs: ``masks`` (1, M, H, W) logits, ``iou_predictions`` (1, M), ``low_res_masks`` (1, M, 4g, 4g)
logits; M = 4 (all mask tokens, upstream's default) or 1 with ``return_single_mask``.

The PyPI segment-anything 1.0 ``SamOnnxModel`` crops with ``int(prepadded_size[i])``, which tracing
bakes in: the masks are wrong at any aspect ratio but the dummy's (upstream issue #56; measured cosine
0.43 at 768×1024). Fixed here as upstream PR #58 did: crop with the 0-dim int64 tensors, so the crop
stays in the graph. Validation runs at ≥ 3 ``orig_im_size`` values, none of them the dummy's ratio.
As the labeler's decoders, the exported attention scales Q before Q·Kᵀ (``scale_first``, TensorRT's
attention-fusion pattern: ``specs/attention.py``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from segment_anything.modeling import Sam
from segment_anything.utils.onnx import SamOnnxModel

from zsplg_fast.export.specs.attention import scale_before_qk
from zsplg_fast.export.specs.base import ExportSpec, Prepared, rand, randn, seeded
from zsplg_fast.export.tensors import AxisRange, TensorSpec, Tolerance
from zsplg_fast.models import sam_info

# (num points incl. padding, (H, W), has_mask): ratios 3:4, ~3:2 portrait, 16:9, 1:1; none is the dummy's.
_VALIDATION = ((1, (768, 1024), 0.0), (3, (500, 333), 1.0), (2, (1080, 1920), 0.0), (4, (640, 640), 1.0))
_DUMMY = (5, (1500, 2250), 1.0)  # upstream's dummy orig_im_size


class SamDecoderOfficial(SamOnnxModel):
    """Upstream ``SamOnnxModel`` with the aspect-ratio crop fixed (follows segment-anything PR #58);
    ``scale_first``: the attention scale on Q before Q·Kᵀ (same numbers up to rounding)."""

    def __init__(self, model: Sam, return_single_mask: bool, scale_first: bool = False) -> None:
        super().__init__(model, return_single_mask=return_single_mask)
        self.scale_first = scale_first

    def forward(
        self,
        image_embeddings: torch.Tensor,
        point_coords: torch.Tensor,
        point_labels: torch.Tensor,
        mask_input: torch.Tensor,
        has_mask_input: torch.Tensor,
        orig_im_size: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Upstream's six inputs (module docstring) → (masks, iou_predictions, low_res_masks)."""
        with scale_before_qk(self.scale_first):
            return super().forward(
                image_embeddings, point_coords, point_labels, mask_input, has_mask_input, orig_im_size
            )

    def mask_postprocessing(self, masks: torch.Tensor, orig_im_size: torch.Tensor) -> torch.Tensor:
        """(1, M, 4g, 4g) logits → (1, M, H, W) logits, cropped to the un-padded region first."""
        masks = F.interpolate(
            masks, size=(self.img_size, self.img_size), mode="bilinear", align_corners=False
        )
        prepadded = self.resize_longest_image_size(orig_im_size, self.img_size).to(torch.int64)
        masks = masks[..., : prepadded[0], : prepadded[1]]  # tensors, not int(): stays dynamic
        size = orig_im_size.to(torch.int64)
        return F.interpolate(masks, size=(size[0], size[1]), mode="bilinear", align_corners=False)


def _feeds(
    gen: torch.Generator, n: int, hw: tuple[int, int], has_mask: float, c: int, g: int, s: int
) -> dict:
    labels = torch.randint(0, 2, (1, n), generator=gen).to(torch.float32)
    labels[0, -1] = -1.0  # the padding point SamPredictor appends when there is no box
    coords = rand((1, n, 2), gen, float(s))
    coords[0, -1] = 0.0
    return {
        "image_embeddings": randn((1, c, g, g), gen),
        "point_coords": coords,
        "point_labels": labels,
        "mask_input": randn((1, 1, 4 * g, 4 * g), gen, 4.0),
        "has_mask_input": torch.tensor([has_mask], dtype=torch.float32),
        "orig_im_size": torch.tensor(hw, dtype=torch.float32),
    }


def prepare_decoder(sam: Sam, return_single_mask: bool = False, scale_first: bool = True) -> Prepared:
    """Bind ``sam_decoder`` to ``sam`` (``return_single_mask`` as upstream's ``--return-single-mask``;
    ``scale_first``: the exported attention order, see the module docstring)."""
    info = sam_info(sam)
    s, g, c = info.img_size, info.embedding_size, info.prompt_embed_dim
    m = 1 if return_single_mask else int(sam.mask_decoder.num_mask_tokens)
    gen = seeded(2)
    return Prepared(
        module=SamDecoderOfficial(sam, return_single_mask, scale_first).eval(),
        inputs=(
            TensorSpec("image_embeddings", "float32", (1, c, g, g)),
            TensorSpec("point_coords", "float32", (1, "num_points", 2), allow_float64=True),
            TensorSpec("point_labels", "float32", (1, "num_points"), allow_float64=True),
            TensorSpec("mask_input", "float32", (1, 1, 4 * g, 4 * g)),
            TensorSpec("has_mask_input", "float32", (1,), allow_float64=True),
            TensorSpec("orig_im_size", "float32", (2,), allow_float64=True),
        ),
        outputs=(
            TensorSpec("masks", "float32", (1, m, "orig_height", "orig_width")),
            TensorSpec("iou_predictions", "float32", (1, m)),
            TensorSpec("low_res_masks", "float32", (1, m, 4 * g, 4 * g)),
        ),
        dummy=_feeds(gen, *_DUMMY, c, g, s),
        validation=[_feeds(gen, n, hw, hm, c, g, s) for n, hw, hm in _VALIDATION],
        tolerances={
            "masks": Tolerance(atol=1e-4, rtol=1e-4, min_cosine=0.99999),
            "iou_predictions": Tolerance(atol=1e-4, rtol=1e-4, min_cosine=0.99999),
            "low_res_masks": Tolerance(atol=1e-4, rtol=1e-4, min_cosine=0.99999),
        },
        profiles={"num_points": AxisRange(1, 2, 16)},
        metadata={
            "interface": "segment-anything scripts/export_onnx_model.py (SamOnnxModel), crop fix of PR #58",
            "coords_frame": f"ResizeLongestSide({s}).apply_coords; append (0,0)/label -1 when no box",
            "mask_threshold": float(sam.mask_threshold),
            "return_single_mask": return_single_mask,
        },
        options={"return_single_mask": return_single_mask, "scale_first": scale_first},
    )


SAM_DECODER = ExportSpec(
    "sam_decoder",
    "sam",
    "SAM prompt encoder + mask decoder, official ONNX interface, correct at every orig_im_size",
    prepare_decoder,
    exporter="legacy",
    exporter_reason="legacy: SamOnnxModel is written for tracing; 20x faster to export than dynamo here",
)
