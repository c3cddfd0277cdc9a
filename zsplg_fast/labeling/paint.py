"""Compose per-mask classes into one label map."""

from __future__ import annotations

import numpy as np
import torch

IGNORE = 255


def paint(
    masks: torch.Tensor,
    classes: torch.Tensor,
    uncovered: str = "background",
    background_index: int = 0,
) -> np.ndarray:
    """Paint masks from large to small, so small masks win where they overlap.

    Args:
        masks: (K, H, W) bool, any device.
        classes: (K,) int64 class index per mask (background masks carry ``background_index``).
        uncovered: ``"background"`` → pixels no mask covers get ``background_index``;
            ``"ignore"`` → they get 255.

    Returns:
        (H, W) uint8 label map, values in {0..C-1, 255}.
    """
    if masks.ndim != 3:
        raise ValueError(f"masks must be (K, H, W), got shape {tuple(masks.shape)}")
    if classes.shape[0] != masks.shape[0]:
        raise ValueError(f"{masks.shape[0]} masks but {classes.shape[0]} classes")
    if uncovered not in ("background", "ignore"):
        raise ValueError(f"uncovered must be 'background' or 'ignore', got {uncovered!r}")
    _, h, w = masks.shape
    fill = background_index if uncovered == "background" else IGNORE
    out = torch.full((h, w), fill, dtype=torch.uint8, device=masks.device)
    if masks.shape[0]:
        areas = masks.flatten(1).sum(1)
        # stable descending sort: equal areas keep input order; later (smaller) masks paint on top
        order = torch.sort(areas, descending=True, stable=True).indices.tolist()
        cls = classes.to(torch.uint8)
        for k in order:  # K passes over (H, W): memory stays O(H·W), unlike a (K, H, W) argmax
            out[masks[k]] = cls[k]
    return out.cpu().numpy()
