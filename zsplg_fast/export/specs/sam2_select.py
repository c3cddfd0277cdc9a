"""SAM 2's single-mask selection, shared by the exported point decoder and the labeler's proposer."""

from __future__ import annotations

import torch


def dynamic_multimask(
    masks: torch.Tensor, iou: torch.Tensor, delta: float, thresh: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """All tokens' (B, 4, h, w) logits and (B, 4) IoU → the single-mask answer (B, 1, h, w), (B, 1):
    token 0 when its stability (areas at ±``delta``) ≥ ``thresh``, else the best of tokens 1..3 by IoU.
    Follows sam2 ``MaskDecoder._dynamic_multimask_via_stability``."""
    multi, multi_iou = masks[:, 1:], iou[:, 1:]
    best = torch.argmax(multi_iou, dim=-1)
    rows = torch.arange(multi_iou.size(0), device=iou.device)
    best_masks, best_iou = multi[rows, best].unsqueeze(1), multi_iou[rows, best].unsqueeze(1)
    single, single_iou = masks[:, 0:1], iou[:, 0:1]
    flat = single.flatten(-2)
    area_i = torch.sum(flat > delta, dim=-1).float()
    area_u = torch.sum(flat > -delta, dim=-1).float()
    stable = torch.where(area_u > 0, area_i / area_u, 1.0) >= thresh
    out = torch.where(stable[..., None, None].expand_as(single), single, best_masks)
    return out, torch.where(stable.expand_as(single_iou), single_iou, best_iou)
