"""Fidelity of every labeling variant on TRAINED weights: the shipped toy SAM + toy CLIP on the toy world.

Random weights leave one or two image-wide masks after NMS, so a fidelity measured on them says nothing.
Here each variant runs through the library's own labeler (``build_labeler``: the ``label`` command's
code path, ``label.precision`` included) on held-out toy-world images, against the upstream reference
(A: ``SamAutomaticMaskGenerator`` + eager CLIP, fp32):

- **prompt masks** (all masks of each image, before any filter): every prompt of a ``grid``×``grid``
  point grid through the variant's encoder and decoder engines, its 3 multimask outputs upsampled as
  upstream does and thresholded; IoU with the fp32 reference's mask of the same prompt and output
  (reference: B, whose decoder equals upstream's ``MaskDecoder`` to the bit), mean per image;
- **AMG masks** (after NMS): the same dense grid with predicted-IoU and stability thresholds 0, so that
  each image keeps tens to hundreds of masks; per image the mean over the reference's masks of the best
  IoU with any of the variant's masks, and the mask-count ratio. An image with fewer than ``min_masks``
  reference masks is not counted (the report says how many were);
- **labels**: the toy configuration's labeler (``configs/toy_ci.yaml``: 16×16, thresholds 0.5 / 0.7,
  CLIP classes) → label maps; mIoU against the ground truth (averaged over the classes present in
  ground truth or prediction: a few images hold few classes), and its difference to the reference's.
"""

from __future__ import annotations

import statistics
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import torch

from zsplg_fast.bench.labeling_pipelines import best_iou
from zsplg_fast.errors import ConfigError
from zsplg_fast.labeling import amg_ops as ops
from zsplg_fast.utils.io import atomic_write_text

TOY_VARIANTS: dict[str, dict[str, Any]] = {
    "A": {"label.masks": "upstream"},
    "B": {"label.masks": "fast", "label.backend": "torch", "label.precision": "fp32"},
    "C": {"label.masks": "fast", "label.backend": "ort", "label.precision": "fp32"},
    "D": {"label.masks": "fast", "label.backend": "ort", "label.precision": "int8"},
    "E": {"label.masks": "fast", "label.backend": "torch", "label.precision": "bf16"},
}
"""Variant → config overrides of its labeler (C/D also get ``label.engines``: exported toy artifacts)."""


@dataclass
class ToyFidelityConfig:
    """Which toy-world images (val split, from ``start``) and how dense the mask-fidelity AMG is."""

    images: int = 4
    start: int = 0
    grid: int = 16
    pred_iou_thresh: float = 0.0
    stability_score_thresh: float = 0.0
    min_masks: int = 20
    amg_masks: bool = True  # False: skip the after-NMS comparison (prompt masks and labels only)
    decoder_attention: str = "fused"  # C/D's exported decoder (export.decoder_attention)


def _toy_config(
    classes: Path, engines: Path | None, overrides: dict[str, Any], dense: ToyFidelityConfig | None
):
    from zsplg_fast.config import load_config

    path = resources.files("zsplg_fast") / "configs" / "toy_ci.yaml"
    extra: dict[str, Any] = {"classify.classes": str(classes), "label.device": "cpu", **overrides}
    if engines is not None:
        extra["label.engines"] = str(engines)
    if dense is not None:
        extra |= {
            "amg.points_per_side": dense.grid,
            "amg.pred_iou_thresh": dense.pred_iou_thresh,
            "amg.stability_score_thresh": dense.stability_score_thresh,
        }
    return load_config(Path(str(path)), extra)


def export_toy_artifacts(
    out: Path, classes: Path, int8: bool = True, decoder_attention: str = "fused"
) -> Path:
    """Export the toy SAM encoder + shared decoder pair and the toy dense CLIP (fp32, and INT8 copies);
    ``decoder_attention``: the shared decoder's form (``export.decoder_attention``)."""
    from zsplg_fast.export.pipeline import run_export

    over = {
        "export.out_dir": str(out),
        "export.format": "onnx-int8" if int8 else "onnx",
        "export.decoder_attention": decoder_attention,
    }
    cfg = _toy_config(classes, None, over, None)
    run_export("sam", cfg, only=["sam_encoder", "sam_decoder_image", "sam_decoder_shared"])
    run_export("clip", cfg, only=["clip_dense"])
    return out


@torch.inference_mode()
def prompt_masks(gen: Any, image: np.ndarray, chunk: int = 64) -> torch.Tensor:
    """Every first-layer grid prompt of a fast ``MaskGenerator`` → (P*3, H, W) bool masks, unfiltered:
    the decoder's 3 outputs per prompt, upsampled (upstream's two-stage bilinear) and thresholded at 0."""
    feeds = gen._encode([image])[0]  # the decoder's per-image feeds: {"image_embeddings": (1, C, h, w)}
    feeds = gen.decoder_image(feeds) if gen.decoder_image else feeds
    h, w = image.shape[:2]
    input_hw = ops.preprocess_shape(h, w, gen.image_size)
    pts = gen.grids[0] * np.array([input_hw[1], input_hw[0]], dtype=np.float64)
    out = []
    for i in range(0, len(pts), chunk):
        coords = pts[i : i + chunk, None, :].astype(np.float32)
        res = gen.decoder(
            {**feeds, "point_coords": coords, "point_labels": np.ones(coords.shape[:2], np.float32)}
        )
        low = torch.as_tensor(res["low_res_masks"]).float().cpu().flatten(0, 1)
        full = ops.upsample_logits(low, input_hw, (h, w), gen.image_size // low.shape[-1])
        out.append(full > gen.mask_threshold)
    return torch.cat(out)


def paired_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(K,) IoU of a[i] with b[i] for (K, H, W) bool masks (two empty masks: 1)."""
    a, b = a.flatten(1).float(), b.flatten(1).float()
    inter = (a * b).sum(1)
    union = a.sum(1) + b.sum(1) - inter
    return torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(inter))


def _miou(labels: Sequence[np.ndarray], gts: Sequence[np.ndarray], num_classes: int) -> float:
    from zsplg_fast.train.metrics import ConfusionMatrix

    cm = ConfusionMatrix(num_classes)
    for pred, gt in zip(labels, gts, strict=True):
        cm.update(pred, gt)
    return float(cm.miou(present_only=True))


def toy_fidelity(
    variants: Sequence[str],
    cfg: ToyFidelityConfig | None = None,
    engines_dir: Path | None = None,
    log: Callable[[str], None] = print,
    reference: str = "A",
) -> dict[str, Any]:
    """Mask and label fidelity of ``variants`` (keys of :data:`TOY_VARIANTS`) against ``reference``
    (A = upstream; B, whose masks and labels equal A's, is the cheaper fp32 reference for tests).

    Returns ``{"config", "images", "reference": {...}, "variants": {v: {...}}}``; per variant
    ``mean_best_iou`` (mean over counted images of the per-image mean best IoU), ``min_image_best_iou``,
    ``count_ratio``, ``masks_per_image`` (reference / ours, over counted images), ``images_counted``,
    ``label_miou`` and ``label_miou_diff_points`` (variant − reference, in points).

    Raises:
        ConfigError: an unknown variant.
    """
    from zsplg_fast.data.synthetic import TOY_WORLD, WORLD_CLASSES
    from zsplg_fast.labeling.build import build_labeler
    from zsplg_fast.toy.evaluate import held_out
    from zsplg_fast.toy.registry import register

    cfg = cfg or ToyFidelityConfig()
    unknown = [v for v in (*variants, reference) if v not in TOY_VARIANTS]
    if unknown:
        raise ConfigError("toy fidelity variants", unknown, "unknown variant", valid=", ".join(TOY_VARIANTS))
    register()
    samples = held_out(cfg.images, start=cfg.start)
    num_classes = TOY_WORLD.num_classes + 1
    with tempfile.TemporaryDirectory(prefix="zsplg-toy-fid-") as tmp:
        classes = Path(tmp) / "classes.txt"
        atomic_write_text(classes, "".join(c + "\n" for c in WORLD_CLASSES[:num_classes]))
        if {"C", "D"} & set(variants) and engines_dir is None:
            engines_dir = export_toy_artifacts(
                Path(tmp) / "export", classes, int8="D" in variants, decoder_attention=cfg.decoder_attention
            )

        def run(v: str) -> tuple[list[Any], list[np.ndarray], list[torch.Tensor] | None]:
            over = TOY_VARIANTS[v]
            eng = engines_dir if over.get("label.backend") == "ort" else None
            dense = build_labeler(_toy_config(classes, eng, over, cfg)).labeler
            masks = [dense.masks(s.image).masks if cfg.amg_masks else [] for s in samples]
            fast = over["label.masks"] == "fast"
            per_prompt = [prompt_masks(dense.masks, s.image) for s in samples] if fast else None
            lab = build_labeler(_toy_config(classes, eng, over, None)).labeler
            return masks, [lab(s.image).label for s in samples], per_prompt

        ref_masks, ref_labels, ref_prompts = run(reference)
        if ref_prompts is None:  # upstream has no engines: its decoder's twin, B, gives the prompt masks
            ref_prompts = [
                prompt_masks(
                    build_labeler(_toy_config(classes, None, TOY_VARIANTS["B"], cfg)).labeler.masks, s.image
                )
                for s in samples
            ]
        gts = [s.label for s in samples]
        ref_miou = _miou(ref_labels, gts, num_classes)
        counted = [i for i, m in enumerate(ref_masks) if cfg.amg_masks and len(m) >= cfg.min_masks]
        out: dict[str, Any] = {
            "config": asdict(cfg),
            "images": [f"toy world val {cfg.start + i}" for i in range(cfg.images)],
            "reference": {
                "variant": reference,
                "masks_per_image": [len(m) for m in ref_masks],
                "label_miou": round(ref_miou, 5),
            },
            "variants": {},
        }
        log(f"toy fidelity: reference masks per image {out['reference']['masks_per_image']}")
        for v in variants:
            if v == reference:
                continue
            masks, labels, prompts = run(v)
            per_image = [best_iou(ref_masks[i], masks[i]) for i in counted]
            paired = [float(paired_iou(r, p).mean()) for r, p in zip(ref_prompts, prompts or [], strict=True)]
            miou = _miou(labels, gts, num_classes)
            row = {
                "prompt_masks_per_image": len(ref_prompts[0]),
                "prompt_mean_iou": round(statistics.mean(paired), 5),
                "prompt_min_image_iou": round(min(paired), 5),
                "images_counted": len(counted),
                "masks_per_image": {
                    "reference": [len(ref_masks[i]) for i in counted],
                    "ours": [len(masks[i]) for i in counted],
                },
                "mean_best_iou": round(statistics.mean(per_image), 5) if per_image else None,
                "min_image_best_iou": round(min(per_image), 5) if per_image else None,
                "count_ratio": round(
                    sum(len(masks[i]) for i in counted) / max(1, sum(len(ref_masks[i]) for i in counted)), 4
                ),
                "label_miou": round(miou, 5),
                "label_miou_diff_points": round(100 * (miou - ref_miou), 3),
            }
            log(f"toy fidelity {v}: {row}")
            out["variants"][v] = row
    return out
