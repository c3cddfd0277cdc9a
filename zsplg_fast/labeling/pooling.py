"""Mask pooling: average dense features inside every mask at once, as one matrix product.

For masks ``S_k`` (resized to the feature grid by exact area weighting) and features ``F`` (D, h, w):
``f_k = Σ_p F[:, p] · S_k[p] / Σ_p S_k[p]`` — computed for all K masks as ``(K, h·w) × (h·w, D)``.
The features are assumed to cover the same frame as the masks (the whole image, no crop).
"""

from __future__ import annotations

import torch

from zsplg_fast.errors import FeedError


def _area_matrix(n_in: int, n_out: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """(n_out, n_in) box-filter weights: the fraction of output cell i's span covered by input pixel j.

    Output cell i spans ``[i·n_in/n_out, (i+1)·n_in/n_out)`` in input pixels; each row sums to 1.
    This is the exact area-average (as cv2 INTER_AREA), also for non-integer ratios and upsampling.
    """
    scale = n_in / n_out
    lo = torch.arange(n_out, device=device, dtype=torch.float64) * scale  # (n_out,)
    hi = lo + scale
    j = torch.arange(n_in, device=device, dtype=torch.float64)  # pixel j spans [j, j+1)
    overlap = (torch.minimum(hi[:, None], j[None, :] + 1) - torch.maximum(lo[:, None], j[None, :])).clamp_(
        min=0
    )
    return (overlap / scale).to(dtype)


def resize_masks_area(masks: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Resize masks to ``size`` by exact area weighting.

    Args:
        masks: (K, H, W) bool or float in [0, 1], any device.
        size: (h, w) target grid.

    Returns:
        (K, h, w) float32 (float64 if ``masks`` is float64) in [0, 1] on ``masks.device``: the fraction
        of each target cell covered by the mask. ``H, W`` may be smaller or larger than ``h, w``.
    """
    if masks.dim() != 3:
        raise FeedError("masks", "shape (K, H, W)", f"shape {list(masks.shape)}")
    h, w = int(size[0]), int(size[1])
    if h < 1 or w < 1:
        raise FeedError("size", "(h, w) with h, w >= 1", f"{size}")
    dtype = torch.float64 if masks.dtype == torch.float64 else torch.float32
    m = masks.to(dtype)
    _, big_h, big_w = m.shape
    if (big_h, big_w) == (h, w):
        return m.clone() if m is masks else m
    if big_h % h == 0 and big_w % w == 0:  # integer ratio: plain average pooling is exact and cheaper
        return torch.nn.functional.avg_pool2d(m[:, None], (big_h // h, big_w // w))[:, 0]
    rh = _area_matrix(big_h, h, m.device, dtype)  # (h, H)
    rw = _area_matrix(big_w, w, m.device, dtype)  # (w, W)
    return torch.matmul(rh, torch.matmul(m, rw.T))  # (h,H) @ (K,H,w) -> (K,h,w)


def pool_masks(masks: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
    """Area-weighted mean of ``features`` inside each mask, for all masks in one matrix product.

    Args:
        masks: (K, H, W) bool or float in [0, 1], in the same frame as the features (any H, W).
        features: (D, h, w) float dense features (e.g. GEM CLIP), any device.

    Returns:
        (K, D) float32 (float64 for float64 features) on ``features.device``, not renormalised.
        A mask that covers nothing (zero weight after resizing) pools to a zero vector.
    """
    if features.dim() != 3:
        raise FeedError("features", "shape (D, h, w)", f"shape {list(features.shape)}")
    if masks.dim() != 3:
        raise FeedError("masks", "shape (K, H, W)", f"shape {list(masks.shape)}")
    d, h, w = features.shape
    dtype = torch.float64 if features.dtype == torch.float64 else torch.float32
    weights = resize_masks_area(masks.to(features.device), (h, w)).to(dtype).reshape(masks.shape[0], h * w)
    feats = features.to(dtype).reshape(d, h * w)
    summed = weights @ feats.T  # (K, D)
    area = weights.sum(dim=1, keepdim=True)  # (K, 1)
    return summed / area.clamp(min=torch.finfo(dtype).tiny)
