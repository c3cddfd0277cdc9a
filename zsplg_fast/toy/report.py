"""Measure the (shipped or given) toy models end to end on held-out images of the toy world."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch

from zsplg_fast.toy.evaluate import (
    ClipSettings,
    ToyAmg,
    amg_masks,
    amg_precision_recall,
    clip_mask_accuracy,
    held_out,
    oracle_miou,
    pseudo_label_miou,
    sam_point_miou,
)

DEFAULT_RECOMMENDED: dict[str, Any] = {
    "amg": {"points_per_side": 16, "pred_iou_thresh": 0.5, "stability_score_thresh": 0.7},
    "clip": {
        "image_size": 256,
        "gem_depth": 0,
        "templates": ["a photo of a {}.", "a drawing of a {}.", "a {} shape."],
    },
}


def recommended() -> dict[str, Any]:
    """Recommended settings from the manifest if one is shipped, else the defaults above."""
    from zsplg_fast.errors import CheckpointError
    from zsplg_fast.toy.registry import toy_settings

    try:
        rec = toy_settings()
    except CheckpointError:
        rec = {}
    return {**DEFAULT_RECOMMENDED, **rec}


def settings_from(rec: dict[str, Any]) -> tuple[ToyAmg, ClipSettings]:
    """(AMG knobs, CLIP settings) from a ``recommended`` dict."""
    a, c = rec["amg"], rec["clip"]
    amg = ToyAmg(a["points_per_side"], a["pred_iou_thresh"], a["stability_score_thresh"])
    clip = ClipSettings(image_size=c["image_size"], gem_depth=c["gem_depth"], templates=tuple(c["templates"]))
    return amg, clip


def load_toy_models(
    sam_checkpoint: Path | None = None, clip_checkpoint: Path | None = None
) -> tuple[torch.nn.Module, torch.nn.Module, Any]:
    """(toy SAM, toy CLIP, tokenizer) via the models layer; default: the sha256-checked shipped weights."""
    from zsplg_fast.models.clip import build_clip
    from zsplg_fast.models.sam import build_sam
    from zsplg_fast.toy.registry import register

    register()
    sam = build_sam("toy", sam_checkpoint)
    bundle = build_clip("toy", clip_checkpoint)
    return sam, bundle.model, bundle.tokenizer


def evaluate_toy(
    num: int = 40,
    sam_checkpoint: Path | None = None,
    clip_checkpoint: Path | None = None,
    rec: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """All held-out figures of the toy models on the first ``num`` val images of the toy world.

    Returns ``{"metrics": {...}, "settings": {...}}``; metrics are floats in [0, 1] (plus counts).
    """
    rec = rec or recommended()
    amg, clip_set = settings_from(rec)
    sam, clip, tok = load_toy_models(sam_checkpoint, clip_checkpoint)
    samples = held_out(num)
    pts = sam_point_miou(sam, samples)
    t0 = time.perf_counter()
    masks = amg_masks(sam, samples, amg)
    t_amg = (time.perf_counter() - t0) / num
    pr = amg_precision_recall(samples, masks)
    acc = clip_mask_accuracy(clip, tok, samples, clip_set)
    metrics = {
        "sam_point_miou_top": pts["miou_top"],
        "sam_point_miou_best3": pts["miou_best"],
        "sam_point_hit50": pts["hit50"],
        "amg_precision": pr["precision"],
        "amg_recall": pr["recall"],
        "amg_masks_per_image": pr["masks_per_image"],
        "clip_gt_mask_acc": acc["acc"],
        "clip_gt_mask_acc_with_bg": acc["acc_bg"],
        "pseudo_label_miou": pseudo_label_miou(clip, tok, samples, masks, clip_set),
        "oracle_class_miou": oracle_miou(samples, masks),
        "instances": acc["n"],
        "sec_per_image_sam": round(t_amg, 2),
    }
    return {"metrics": metrics, "settings": rec}
