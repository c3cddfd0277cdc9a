"""Tensor operations of automatic mask generation (AMG), on whatever device the tensors live.

Each function gives the same answer as its segment-anything counterpart (``utils/amg.py``,
``modeling/sam.py``, ``utils/transforms.py``), which we read and followed — named per function —
but restructured to touch fewer pixels: e.g. the two-stage upsampling only computes the valid
(unpadded) region, and boxes take two reductions instead of eight.
"""

from __future__ import annotations

import math
from itertools import product
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F


def point_grid(n_per_side: int) -> np.ndarray:
    """(n², 2) float64 points (x, y) in [0, 1], cell centres, x fastest (follows amg.build_point_grid)."""
    offset = 1.0 / (2 * n_per_side)
    side = np.linspace(offset, 1.0 - offset, n_per_side)
    xs, ys = np.meshgrid(side, side)  # xs varies along columns, ys along rows
    return np.stack([xs, ys], axis=-1).reshape(-1, 2)


def layer_point_grids(n_per_side: int, n_layers: int, scale_per_layer: int) -> list[np.ndarray]:
    """One grid per crop layer; layer i has ``int(n / scale**i)`` points per side (as upstream)."""
    return [point_grid(int(n_per_side / (scale_per_layer**i))) for i in range(n_layers + 1)]


def crop_boxes(
    im_size: tuple[int, int], n_layers: int, overlap_ratio: float
) -> tuple[list[list[int]], list[int]]:
    """Crop boxes [x0, y0, x1, y1] (ints) and their layer index; layer 0 is the whole image.

    Layer i ≥ 1 has (2**i)² overlapping crops (follows amg.generate_crop_boxes, same rounding).
    """
    im_h, im_w = im_size
    boxes, layers = [[0, 0, im_w, im_h]], [0]
    for i_layer in range(n_layers):
        n = 2 ** (i_layer + 1)
        overlap = int(overlap_ratio * min(im_h, im_w) * (2 / n))
        crop_w = math.ceil((overlap * (n - 1) + im_w) / n)
        crop_h = math.ceil((overlap * (n - 1) + im_h) / n)
        xs = [int((crop_w - overlap) * i) for i in range(n)]
        ys = [int((crop_h - overlap) * i) for i in range(n)]
        for x0, y0 in product(xs, ys):
            boxes.append([x0, y0, min(x0 + crop_w, im_w), min(y0 + crop_h, im_h)])
            layers.append(i_layer + 1)
    return boxes, layers


def preprocess_shape(h: int, w: int, long_side: int) -> tuple[int, int]:
    """(new_h, new_w) with the long side = ``long_side`` (follows ResizeLongestSide.get_preprocess_shape)."""
    scale = long_side * 1.0 / max(h, w)
    return int(h * scale + 0.5), int(w * scale + 0.5)


def masks_to_boxes(masks: torch.Tensor) -> torch.Tensor:
    """(K, H, W) bool → (K, 4) int64 XYXY with inclusive max; [0, 0, 0, 0] for an empty mask.

    Same answer as amg.batched_mask_to_box, with two reductions instead of eight.
    """
    if masks.shape[0] == 0:
        return torch.zeros((0, 4), dtype=torch.int64, device=masks.device)
    rows = masks.any(dim=2)  # (K, H)
    cols = masks.any(dim=1)  # (K, W)
    return _edges_to_boxes(rows, cols)


def _edges_to_boxes(rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """(K, H) and (K, W) bool occupancy → (K, 4) int64 [x_min, y_min, x_max, y_max], zeros if empty."""
    h, w = rows.shape[1], cols.shape[1]
    y0 = rows.to(torch.uint8).argmax(dim=1)
    y1 = h - 1 - rows.flip(1).to(torch.uint8).argmax(dim=1)
    x0 = cols.to(torch.uint8).argmax(dim=1)
    x1 = w - 1 - cols.flip(1).to(torch.uint8).argmax(dim=1)
    boxes = torch.stack([x0, y0, x1, y1], dim=1)
    return boxes * rows.any(dim=1, keepdim=True)


def stability_score(logits: torch.Tensor, threshold: float, offset: float) -> torch.Tensor:
    """(K, H, W) logits → (K,) float32 IoU of the masks at ``threshold ± offset`` (nan if both empty).

    Follows amg.calculate_stability_score (the high mask is inside the low one, so IoU = ratio).
    """
    hi = (logits > threshold + offset).flatten(1).sum(1, dtype=torch.int64)
    lo = (logits > threshold - offset).flatten(1).sum(1, dtype=torch.int64)
    return hi.float() / lo.float()


def near_crop_edge(
    boxes: torch.Tensor, crop_box: list[int], orig_box: list[int], atol: float = 20.0
) -> torch.Tensor:
    """(K, 4) XYXY boxes in the crop frame → (K,) bool: near a crop edge that is not an image edge.

    Follows amg.is_box_near_crop_edge (boxes are shifted into the image frame first).
    """
    crop = torch.as_tensor(crop_box, dtype=torch.float32, device=boxes.device)
    orig = torch.as_tensor(orig_box, dtype=torch.float32, device=boxes.device)
    shifted = boxes.float() + crop[[0, 1, 0, 1]]
    near_crop = torch.isclose(shifted, crop[None], atol=atol, rtol=0)
    near_image = torch.isclose(shifted, orig[None], atol=atol, rtol=0)
    return (near_crop & ~near_image).any(dim=1)


def upsample_logits(
    low: torch.Tensor, input_hw: tuple[int, int], out_hw: tuple[int, int], ratio: int
) -> torch.Tensor:
    """(K, h, w) low-res logits → (K, H, W) logits at the image (crop) size, as Sam.postprocess_masks.

    Upstream upsamples the (K, S/ratio, S/ratio) logits to S² (bilinear, align_corners=False), crops
    ``input_hw``, then resizes to ``out_hw``. Here the first stage only computes the rows/columns that
    survive the crop (``low`` may already be cut to ``ceil(in/ratio) + 1`` rows/columns).
    """
    in_h, in_w = input_hw
    src_h = min(low.shape[1], math.ceil(in_h / ratio) + 1)
    src_w = min(low.shape[2], math.ceil(in_w / ratio) + 1)
    up = F.interpolate(
        low[:, None, :src_h, :src_w], scale_factor=float(ratio), mode="bilinear", align_corners=False
    )[:, :, :in_h, :in_w]
    if tuple(out_hw) == (in_h, in_w):  # scale 1: torch's resize would copy every value unchanged
        return up[:, 0]
    return F.interpolate(up, size=out_hw, mode="bilinear", align_corners=False)[:, 0]


def available_memory(device: torch.device) -> int:
    """Free bytes: CUDA free memory, else host MemAvailable (Linux), else 4 GiB."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 4 << 30


# CPU: the decoder is bound by memory traffic (residual adds, layer norms, copies over (B, h·w, C)
# tensors), so small batches whose activations stay in cache beat large ones. Measured on vit_b (64×64×256
# embeddings, 2 EPYC cores, per prompt): batch 4 took 0.57× the time of batch 32 in upstream's
# decoder, 0.69–0.82× in ours (torch) and 0.71–0.76× in onnxruntime. One activation per batch ≤ 16 MiB.
CPU_ACTIVATION_BYTES = 16 << 20
# onnxruntime since the exported decoders upscale with MatMuls on token rows (export/specs/upscaling.py)
# and SAM 2's shares its image side per call: GEMM-bound, larger batches win. Measured on the exported
# decoders (2 EPYC cores, ms per prompt at batch 4 / 8 / 16 / 32 / 64, alternated in one process):
# vit_b sam_decoder_shared 81.7 / 77.8 / 72.6 / 68.2 / 66.3; Hiera-B+ sam2_decoder_batched 104.8 / 93.3 /
# 83.0 / 76.3 / 76.1. So 128 MiB per activation: 32 prompts for a 64×64×256 embedding.
CPU_ACTIVATION_BYTES_BY_BACKEND: dict[str, int] = {"ort": 128 << 20}
"""Decoder engine backend → its CPU activation budget (others: ``CPU_ACTIVATION_BYTES``)."""


def engine_max_batch(decoder: Any, input_name: str = "point_coords") -> int | None:
    """The most prompts one decoder call may carry: the batch max of the engine's optimisation profile
    (``profiles``: TensorRT plans, read from the plan or its sidecar; onnxruntime's TensorRT provider),
    or None when the engine takes any batch."""
    profile = (getattr(decoder, "profiles", None) or {}).get(input_name)
    return int(profile[2][0]) if profile else None


def default_prompt_batch(
    device: torch.device, grid_hw: tuple[int, int], channels: int = 256, backend: str = "torch"
) -> int:
    """Prompts per decoder call when the user sets none (answers never depend on it).

    CUDA: memory-aware — a quarter of free memory at ~10 embedding-sized activations plus the
    (3, 4h, 4w) float32 logits per prompt; a multiple of 16 in [16, 1024] (64×64 grid, 20 GB free → 112).
    CPU: cache-aware — the largest power of two in [1, 256] whose (B, h·w, C) float32 activation fits
    the decoder ``backend``'s budget, ``CPU_ACTIVATION_BYTES_BY_BACKEND`` or ``CPU_ACTIVATION_BYTES``
    (vit_b's 64×64×256 → 4 on torch, 32 on onnxruntime; the 16×16×128 toy SAM → 128 on torch).
    """
    cells = grid_hw[0] * grid_hw[1]
    if device.type != "cuda":
        budget = CPU_ACTIVATION_BYTES_BY_BACKEND.get(backend, CPU_ACTIVATION_BYTES)
        fit = max(1, budget // (4 * cells * channels))
        return min(256, 1 << (fit.bit_length() - 1))
    per_prompt = 4 * cells * (10 * channels + 48)
    n = int(0.25 * available_memory(device) / per_prompt)
    return max(16, min(1024, n // 16 * 16))


def device_of(engine: Any) -> torch.device:
    """The torch device an engine runs on (its ``device`` attribute; CPU when it has none)."""
    try:
        return torch.device(str(getattr(engine, "device", "cpu")))
    except RuntimeError:
        return torch.device("cpu")


def zeros(x: torch.Tensor) -> torch.Tensor:
    """(len(x),) int64 zeros on x's device (one NMS category)."""
    return torch.zeros(len(x), dtype=torch.int64, device=x.device)


def feed(engine: Any, x: torch.Tensor) -> Any:
    """A feed in the engine's native type: numpy for CPU engines, a torch tensor on its device otherwise."""
    dev = device_of(engine)
    if dev.type == "cpu":
        return x.detach().cpu().contiguous().numpy()
    return x.to(dev).contiguous()
