"""A structured SAM 2 whose masks follow colour regions (the colour SAM of ``synthetic_sam`` for SAM 2).

Random SAM 2 weights leave one mask after NMS, so comparing AMG implementations on them tests little.
``build_colour_sam2`` is a real ``sam2`` ``SAM2Base`` (so ``SAM2ImagePredictor`` and
``SAM2AutomaticMaskGenerator`` run it unchanged, and our ``sam2_*`` export specs bind it) whose image
encoder, prompt encoder and mask decoder are replaced by a colour region-grower with the same
interfaces:

- encoder: the FPN levels are the image's average colours at strides 4, 8, 16 (``conv_s0``/``conv_s1``
  are identity 1×1 convolutions, ``no_mem_embed`` is zero), so all three encoder outputs matter;
- prompt encoder: the first point (normalised to [0, 1]) and its label pass through (label 0 inverts the
  mask); a mask prompt passes through as the dense embedding;
- decoder: token k's logits = T·(1 − (|c₄(p) − u|² + ½|c₁₆(p) − u|²) / tol − |p − point|² / r_k²), with
  u the stride-8 colour under the point, r = (0.25, 0.08, 0.18, 0.4) for tokens 0..3 and T large (sharp,
  stable edges), plus ½ × the mask prompt (the m2m step changes masks); IoU = mean sigmoid(10·|logit|/T − 3),
  the share of pixels away from the mask's edge. sam2's own
  ``MaskDecoder.forward`` selection (multimask tokens 1..3, dynamic multimask via stability) runs on it.

Every operation is per pixel or per prompt, so answers do not depend on the prompt batch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

_RADII = (0.25, 0.08, 0.18, 0.4)


class ColourFpn(nn.Module):
    """(B, 3, S, S) → sam2 image-encoder dict: ``backbone_fpn`` = average colours at strides 4, 8, 16."""

    def forward(self, x: torch.Tensor) -> dict[str, object]:
        fpn = [F.avg_pool2d(x, k) for k in (4, 8, 16)]
        return {
            "vision_features": fpn[-1],
            "vision_pos_enc": [torch.zeros_like(f) for f in fpn],
            "backbone_fpn": fpn,
        }


class PointPassPrompts(nn.Module):
    """sam2 ``PromptEncoder``'s interface: sparse = ((x, y) + 0.5) / S per point (padding appended),
    dense = the mask prompt itself (B, 1, 4g, 4g), or ``no_mask_embed`` (zero) at the g×g grid."""

    def __init__(self, img_size: int) -> None:
        super().__init__()
        g = img_size // 16
        self.input_image_size = (img_size, img_size)
        self.image_embedding_size = (g, g)
        self.embed_dim = 3
        self.no_mask_embed = nn.Embedding(1, 1)
        nn.init.zeros_(self.no_mask_embed.weight)

    def get_dense_pe(self) -> torch.Tensor:
        return torch.zeros(1, 1, *self.image_embedding_size)

    def _get_device(self) -> torch.device:
        return self.no_mask_embed.weight.device

    def _embed_points(self, points: torch.Tensor, labels: torch.Tensor, pad: bool) -> torch.Tensor:
        """(B, N, 2), (B, N) → (B, N+1, 3): normalised point and its label (padding: (0, 0), -1)."""
        points = points + 0.5
        labels = labels.to(points.dtype)
        if pad:
            points = torch.cat([points, torch.zeros((points.shape[0], 1, 2), device=points.device)], dim=1)
            labels = torch.cat([labels, -torch.ones((labels.shape[0], 1), device=labels.device)], dim=1)
        return torch.cat([points / self.input_image_size[0], labels[..., None]], dim=-1)

    def _embed_masks(self, masks: torch.Tensor) -> torch.Tensor:
        return masks


class ColourDecoder(nn.Module):
    """``MaskDecoder.predict_masks``'s interface: (B, 4, 4g, 4g) region-grower logits, (B, 4) confidences."""

    def __init__(
        self, sharpness: float = 40.0, colour_tol: float = 1.0, band: float = 10.0, mask_gain: float = 0.5
    ) -> None:
        super().__init__()
        self.sharpness, self.colour_tol, self.band, self.mask_gain = sharpness, colour_tol, band, mask_gain
        self.register_buffer("radii", torch.tensor(_RADII), persistent=False)
        self.conv_s0, self.conv_s1 = _identity_conv(), _identity_conv()
        self.num_mask_tokens = 4
        self.dynamic_multimask_via_stability = True
        self.dynamic_multimask_stability_delta = 0.05
        self.dynamic_multimask_stability_thresh = 0.98
        self.use_multimask_token_for_obj_ptr = True
        self.pred_obj_scores = False

    def predict_masks(
        self,
        image_embeddings: torch.Tensor,
        image_pe: torch.Tensor,
        sparse_prompt_embeddings: torch.Tensor,
        dense_prompt_embeddings: torch.Tensor,
        repeat_image: bool,
        high_res_features: list[torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        if high_res_features is None:
            raise ValueError("the colour SAM 2 reads the high-resolution features (use_high_res_features)")
        fine, mid = high_res_features[0][:1], high_res_features[1][:1]  # (1, 3, 4g, 4g), (1, 3, 2g, 2g)
        size = fine.shape[-1]
        coarse = F.interpolate(image_embeddings[:1], size=(size, size), mode="nearest")
        pts = sparse_prompt_embeddings[:, 0, :2]  # (B, 2) in [0, 1]
        sign = torch.where(sparse_prompt_embeddings[:, 0, 2] == 0, -1.0, 1.0)[:, None, None, None]
        grid = pts[:, None, None, :] * 2 - 1
        # .shape[0], not len(): tracing keeps the prompt batch symbolic (ONNX export of this model)
        under = F.grid_sample(mid.expand(pts.shape[0], -1, -1, -1), grid, align_corners=False)  # (B,3,1,1)
        dist_c = ((fine - under) ** 2).sum(1) + 0.5 * ((coarse - under) ** 2).sum(1)  # (B, L, L)
        axis = (torch.arange(size, device=pts.device, dtype=torch.float32) + 0.5) / size
        dy = (axis[None, :] - pts[:, 1:2]) ** 2
        dx = (axis[None, :] - pts[:, 0:1]) ** 2
        dist_p = dy[:, :, None] + dx[:, None, :]
        reach = dist_c[:, None] / self.colour_tol + dist_p[:, None] / (self.radii**2)[None, :, None, None]
        logits = self.sharpness * (1.0 - reach) * sign  # a negative point (label 0) inverts its mask
        if dense_prompt_embeddings.shape[-1] == size:  # a mask prompt (m2m); the no-mask embedding is g×g
            logits = logits + self.mask_gain * dense_prompt_embeddings
        # confidence: the share of pixels far from the mask's edge (1 - reach well away from 0)
        conf = torch.sigmoid(self.band * (logits / self.sharpness).abs() - 3.0).mean(dim=(2, 3))
        unused = torch.zeros_like(conf)  # mask tokens and object scores: not used by image AMG
        return logits, conf, unused[..., None], unused[:, :1]


def _identity_conv() -> nn.Conv2d:
    conv = nn.Conv2d(3, 3, 1)
    with torch.no_grad():
        conv.weight.copy_(torch.eye(3)[:, :, None, None])
        conv.bias.zero_()
    return conv


def build_colour_sam2(img_size: int = 256) -> nn.Module:
    """A ``SAM2Base`` (eval mode) with the colour encoder/prompts/decoder; ``img_size`` multiple of 64.

    Needs the ``sam2`` package (its ``MaskDecoder.forward`` and ``PromptEncoder.forward`` are reused).
    """
    from sam2.modeling.sam.mask_decoder import MaskDecoder
    from sam2.modeling.sam.prompt_encoder import PromptEncoder

    from zsplg_fast.models.init import deterministic_init
    from zsplg_fast.models.sam2 import SAM2_CONFIGS, _hydra

    _, instantiate, omegaconf = _hydra()
    cfg = omegaconf.create(dict(SAM2_CONFIGS["sam2_tiny"]))
    cfg.model.image_size = img_size
    g = img_size // 16
    cfg.model.memory_attention.layer.self_attention.feat_sizes = [g, g]
    cfg.model.memory_attention.layer.cross_attention.feat_sizes = [g, g]
    with deterministic_init():
        model = instantiate(cfg.model, _recursive_=True)

    decoder_cls = type(
        "ColourSam2Decoder",
        (ColourDecoder,),
        {
            "forward": MaskDecoder.forward,  # sam2's own output selection
            "_dynamic_multimask_via_stability": MaskDecoder._dynamic_multimask_via_stability,
            "_get_stability_scores": MaskDecoder._get_stability_scores,
        },
    )
    prompts_cls = type(
        "ColourSam2Prompts",
        (PointPassPrompts,),
        {"forward": PromptEncoder.forward, "_get_batch_size": PromptEncoder._get_batch_size},
    )
    model.image_encoder = ColourFpn()
    model.sam_prompt_encoder = prompts_cls(img_size)
    model.sam_mask_decoder = decoder_cls()
    model.no_mem_embed = nn.Parameter(torch.zeros(1, 1, 3))
    model.hidden_dim = 3
    return model.eval()
