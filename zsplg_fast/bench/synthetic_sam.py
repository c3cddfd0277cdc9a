"""A hand-made SAM with structured masks, for AMG fidelity checks where random weights fall short.

Random-weight SAMs (vit_b or tiny) give near-identical, image-wide noisy masks for every prompt:
after box NMS a single mask is left, so comparing AMG implementations on them tests almost nothing.
``build_colour_sam`` builds a ``segment_anything.modeling.Sam`` whose three parts keep upstream's
interfaces (``SamPredictor`` and ``SamAutomaticMaskGenerator`` run it unchanged) but compute a
colour region-grower: the mask logits of a prompt are high where the low-res colour is close to the
colour under the point and near it, at three spatial scales (the multimask outputs). Masks have
smooth and sharp boundaries, varied sizes, stability scores spread over (0, 1), and distinct boxes —
what the filter/NMS/upsampling path of AMG needs to be exercised.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from segment_anything.modeling import Sam
from torch import nn

_PATCH = 16  # encoder stride, as SAM
_LOW = 4  # low-res logits are 4× the embedding grid, as SAM


class ColourEncoder(nn.Module):
    """(B, 3, S, S) normalised image → (B, 48, S/16, S/16): 4×4-average colours, space-to-depth by 4."""

    def __init__(self, img_size: int) -> None:
        super().__init__()
        self.img_size = img_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        low = F.avg_pool2d(x, _PATCH // _LOW)  # (B, 3, S/4, S/4)
        return F.pixel_unshuffle(low, _LOW)


class PointPromptEncoder(nn.Module):
    """Passes points through: sparse = ((x, y) + 0.5) / S, shape (B, N, 2); dense = zeros (1, 1, g, g)."""

    def __init__(self, img_size: int) -> None:
        super().__init__()
        self.img_size = img_size
        self.grid = img_size // _PATCH

    def get_dense_pe(self) -> torch.Tensor:
        return torch.zeros(1, 1, self.grid, self.grid)

    def forward(
        self,
        points: tuple[torch.Tensor, torch.Tensor] | None,
        boxes: torch.Tensor | None,
        masks: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if points is None:
            raise ValueError("the colour SAM needs point prompts")
        coords = (points[0].to(torch.float32) + 0.5) / self.img_size
        return coords, torch.zeros(1, 1, self.grid, self.grid, device=coords.device)


class ColourMaskDecoder(nn.Module):
    """Region-grower logits (B, 3, 4g, 4g) and confidences (B, 3) from colour embeddings and points.

    logit_k(p) = bias − colour_gain·|c(p) − c(point)|² − |p − point|² / radius_k², radius_k growing with k.
    """

    def __init__(self, colour_gain: float = 6.0, bias: float = 3.0) -> None:
        super().__init__()
        self.colour_gain = colour_gain
        self.bias = bias
        self.register_buffer("radii", torch.tensor([0.08, 0.18, 0.4]), persistent=False)

    def forward(
        self,
        image_embeddings: torch.Tensor,
        image_pe: torch.Tensor,
        sparse_prompt_embeddings: torch.Tensor,
        dense_prompt_embeddings: torch.Tensor,
        multimask_output: bool,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        colours = F.pixel_shuffle(image_embeddings[:1], _LOW)  # (1, 3, L, L)
        size = colours.shape[-1]
        pts = sparse_prompt_embeddings[:, 0, :]  # (B, 2) in [0, 1]
        grid = pts[:, None, None, :] * 2 - 1  # grid_sample frame
        under = F.grid_sample(colours.expand(len(pts), -1, -1, -1), grid, align_corners=False)  # (B,3,1,1)
        dist_c = ((colours - under) ** 2).sum(1)  # (B, L, L)
        axis = (torch.arange(size, device=pts.device, dtype=torch.float32) + 0.5) / size
        dy = (axis[None, :] - pts[:, 1:2]) ** 2  # (B, L)
        dx = (axis[None, :] - pts[:, 0:1]) ** 2
        dist_p = dy[:, :, None] + dx[:, None, :]  # (B, L, L)
        r2 = (self.radii**2)[None, :, None, None]
        logits = self.bias - self.colour_gain * dist_c[:, None] - dist_p[:, None] / r2
        conf = torch.sigmoid(logits.abs() - 2.0).mean(dim=(2, 3))  # (B, 3) in (0, 1)
        if not multimask_output:
            return logits[:, :1], conf[:, :1]
        return logits, conf


def build_colour_sam(img_size: int = 1024) -> Sam:
    """A ``Sam`` (eval mode) with SAM's pixel mean/std, input ``img_size``, embedding (1, 48, S/16, S/16)."""
    sam = Sam(
        image_encoder=ColourEncoder(img_size),  # type: ignore[arg-type]
        prompt_encoder=PointPromptEncoder(img_size),  # type: ignore[arg-type]
        mask_decoder=ColourMaskDecoder(),  # type: ignore[arg-type]
    )
    return sam.eval()


class _Encoder(nn.Module):
    def __init__(self, sam: Sam) -> None:
        super().__init__()
        self.image_encoder = sam.image_encoder

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.image_encoder(image)


class PromptDecoder(nn.Module):
    """Any ``Sam``'s own prompt encoder + mask decoder behind ``sam_decoder_batched``'s feed names.

    (1, C, g, g) embedding, (B, N, 2) S-frame points, (B, N) labels → (B, 3, 4g, 4g) logits, (B, 3) IoU,
    exactly what ``SamPredictor.predict_torch(..., multimask_output=True)`` computes before upsampling.
    """

    def __init__(self, sam: Sam) -> None:
        super().__init__()
        self.sam = sam

    def forward(
        self, image_embeddings: torch.Tensor, point_coords: torch.Tensor, point_labels: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        sparse, dense = self.sam.prompt_encoder(points=(point_coords, point_labels), boxes=None, masks=None)
        return self.sam.mask_decoder(
            image_embeddings=image_embeddings,
            image_pe=self.sam.prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=True,
        )


def sam_module_engines(sam: Sam, device: str = "cpu", autocast: str = "fp32") -> tuple[Any, Any]:
    """(encoder, decoder) TorchEngines over any ``Sam`` (also the colour SAM), with the feed names of
    ``sam_encoder`` / ``sam_decoder_batched``. For real SAMs prefer the export specs' modules."""
    from zsplg_fast.engines.torch_engine import TorchEngine
    from zsplg_fast.export.tensors import TensorSpec

    s = int(sam.image_encoder.img_size)
    enc = TorchEngine(
        _Encoder(sam),
        [TensorSpec("image", "float32", ("batch", 3, s, s))],
        [TensorSpec("image_embeddings", "float32", ("batch", "c", "h", "w"))],
        device=device,
        autocast=autocast,
    )
    dec = TorchEngine(
        PromptDecoder(sam),
        [
            TensorSpec("image_embeddings", "float32", (1, "c", "h", "w")),
            TensorSpec("point_coords", "float32", ("batch", "n", 2)),
            TensorSpec("point_labels", "float32", ("batch", "n")),
        ],
        [
            TensorSpec("low_res_masks", "float32", ("batch", 3, "lh", "lw")),
            TensorSpec("iou_predictions", "float32", ("batch", 3)),
        ],
        device=device,
        autocast=autocast,
    )
    return enc, dec
