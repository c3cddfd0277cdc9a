"""What ``bench_labeling`` runs: the variants, the configuration, the synthetic benchmark image.

Split from ``labeling.py`` (which re-exports these names); no behaviour of its own.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

VARIANTS = {
    "A": "upstream SamAutomaticMaskGenerator (SAM 2: SAM2AutomaticMaskGenerator) + eager DenseClip (PyTorch)",
    "B": "ours: MaskGenerator on TorchEngines (spec modules, eager fp32)",
    "C": "ours: MaskGenerator on OrtEngines (CPU, fp32)",
    "D": "ours: MaskGenerator on OrtEngines with quantize_dynamic INT8 artifacts",
    "B0": "B with the one-piece sam_decoder_batched (image-side work once per decoder call: before sharing)",
    "E": "ours: MaskGenerator on TorchEngines under CPU bf16 autocast (label --precision bf16)",
}
TOY_FIDELITY_OF = {"B": "B", "B0": "B", "C": "C", "D": "D", "E": "E"}
"""Speed variant → the toy-fidelity variant that runs the same code (B0's decoder is bit-identical to B's)."""


@dataclass
class LabelBenchConfig:
    """What to run. ``precision="int8"`` adds variant D. Thresholds default to 0 so random weights keep
    their masks. ``points_per_batch`` is upstream's (A); ``prompt_batch`` ours (None = the library's
    automatic default, ``default_prompt_batch``). ``toy_images`` / ``toy_grid``: the trained-weights
    fidelity (0 images: skip it)."""

    grids: tuple[int, ...] = (16, 32)
    images: int = 2
    image_hw: tuple[int, int] = (768, 1024)
    precision: str = "fp32"
    sam_variant: str = "vit_b"
    clip_model: str = "ViT-B-16"
    clip_size: int = 448
    pred_iou_thresh: float = 0.0
    stability_score_thresh: float = 0.0
    points_per_batch: int = 64
    prompt_batch: int | None = None  # ours; None = the library default (default_prompt_batch)
    threads: int | None = None
    export_dir: str | None = None
    colour_fidelity: bool = True
    toy_images: int = 4
    toy_grid: int = 16
    seed: int = 0
    out: str | None = "bench/results/labeling_cpu"
    note: str = ""
    variants: tuple[str, ...] = field(default=("A", "B", "C"))
    exporter: str | None = None  # the SAM artifacts' exporter; None: each spec's preferred one
    # C/D's exported AMG decoder: folded = onnxruntime CPU's form (export.decoder_attention)
    decoder_attention: str = "folded"
    isolate: bool = True  # one process per variant


def bench_image(h: int, w: int, seed: int) -> np.ndarray:
    """A synthetic (h, w, 3) uint8 scene: gradient background, flat discs and boxes, mild noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:h, :w].astype(np.float32)
    img = (rng.random(3) * 255 * (0.6 + 0.4 * (yy / h)[..., None])).astype(np.float32)
    img = np.broadcast_to(img, (h, w, 3)).copy()
    for _ in range(14):
        cy, cx = rng.uniform(0, h), rng.uniform(0, w)
        r = rng.uniform(min(h, w) / 14, min(h, w) / 3)
        shape = (
            (yy - cy) ** 2 + (xx - cx) ** 2 < r * r
            if rng.random() < 0.5
            else (abs(yy - cy) < r) & (abs(xx - cx) < 0.6 * r)
        )
        img[shape] = rng.integers(0, 256, 3)
    return np.clip(img + rng.normal(0, 6, img.shape), 0, 255).astype(np.uint8)
