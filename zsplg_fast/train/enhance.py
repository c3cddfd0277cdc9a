"""Enhanced labels: predict the unlabeled images with a trained UniMatch model and keep the confident
pixels; elsewhere take the fallback (the zero-shot label by default). Both fusion readings end here:
``online`` trained the model with the zero-shot labels, ``two_stage`` trained plain UniMatch.

The writer is atomic and resumable, like the label job: ``out/labels/<id>.png`` palette PNGs written
through ``write_label`` (temp + ``os.replace``), files already there and readable are kept, and
``out/manifest.json`` pins the checkpoint and settings so a folder is never mixed across runs.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from zsplg_fast.config import fingerprint, to_dict
from zsplg_fast.config.train import TrainConfig
from zsplg_fast.data.images import load_image
from zsplg_fast.data.labels import read_label, write_label
from zsplg_fast.errors import ConfigError, LabelFormatError, OutputExistsError
from zsplg_fast.models.segmenter import load_checkpoint
from zsplg_fast.train.common import open_splits
from zsplg_fast.train.datasets import label_file, labels_dir
from zsplg_fast.train.evaluate import predict
from zsplg_fast.train.losses import IGNORE, enhanced_label
from zsplg_fast.train.metrics import ConfusionMatrix
from zsplg_fast.train.runtime import setup_runtime
from zsplg_fast.train.transforms import normalize
from zsplg_fast.utils.io import atomic_write_json, remove_stale_temps, sha256_file
from zsplg_fast.utils.outdir import check_output, claim_output, json_with

log = logging.getLogger("zsplg_fast.train")

MANIFEST, REPORT = "manifest.json", "report.json"
COMMAND = "enhance"  # the folder marker's command
LEGACY = (json_with(MANIFEST, "fingerprint", "settings"),)  # enhance folders made before markers


def _manifest(cfg: TrainConfig, checkpoint: Path, threshold: float, num_classes: int) -> dict[str, Any]:
    settings = {
        "checkpoint_sha256": sha256_file(checkpoint),
        "threshold": threshold,
        "fallback": cfg.enhance.fallback,
        "scope": cfg.enhance.scope,
        "mode": cfg.enhance.mode,
        "window": cfg.eval.window or cfg.data.crop_size,
        "zero_shot": str(labels_dir(cfg.data.zero_shot)) if cfg.data.zero_shot else None,
        "num_classes": num_classes,
    }
    return {"fingerprint": fingerprint(settings), "settings": settings, "checkpoint": str(checkpoint)}


def _claim(out: Path, manifest: dict[str, Any]) -> None:
    """Use ``out`` only if it is new, empty, or an enhance folder made with the same settings."""
    m = out / MANIFEST
    check_output(out, COMMAND, legacy=LEGACY)
    if m.is_file():
        old = read_manifest(m)
        if old.get("fingerprint") != manifest["fingerprint"]:
            raise OutputExistsError(
                out, "holds enhanced labels made with another checkpoint or settings; choose another --out"
            )
    claim_output(out, COMMAND, legacy=LEGACY)
    if not m.is_file():
        atomic_write_json(m, manifest)


def read_manifest(path: Path) -> dict[str, Any]:
    """The manifest JSON (empty dict when unreadable)."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _existing(dst: Path, num_classes: int) -> torch.Tensor | None:
    if not dst.is_file():
        return None
    try:
        return torch.from_numpy(read_label(dst, num_classes))
    except LabelFormatError:
        return None


def enhance(cfg: TrainConfig, checkpoint: str | Path, out: str | Path) -> dict[str, Any]:
    """Write an enhanced label for every image of ``cfg.data.unlabeled`` into ``out/labels``.

    Under torchrun each rank takes every world-th image. Where the unlabeled split lists ground-truth
    labels, the mIoU of the enhanced labels and of the zero-shot labels against them is reported.

    Returns ``{"out", "labels", "written", "kept", "images", "confident_fraction", "changed_fraction"
    (pixels whose label differs from the zero-shot one), "miou_enhanced", "miou_zero_shot",
    "images_with_gt", "seconds"}`` (mIoUs None without ground truth, changed_fraction None without
    zero-shot labels); also written to ``out/report.json``.
    """
    t0 = time.perf_counter()
    e, d = cfg.enhance, cfg.data
    if e.fallback == "zero_shot" and d.zero_shot is None:
        raise ConfigError(
            "train.enhance.fallback",
            e.fallback,
            "needs train.data.zero_shot (the zero-shot label folder)",
            "zero_shot with data.zero_shot set, prediction, ignore",
        )
    ckpt_path, out = Path(checkpoint), Path(out)
    check_output(out, COMMAND, legacy=LEGACY)  # before the model loads; writes nothing
    rt = setup_runtime(cfg.run)
    try:
        splits = open_splits(cfg, ("unlabeled",))
        model, _ = load_checkpoint(ckpt_path, rt.device)
        c = splits.num_classes
        if model.config.num_classes != c:
            raise ConfigError(
                "train.data.classes",
                d.classes,
                f"the checkpoint predicts {model.config.num_classes} classes, the data has {c}",
            )
        threshold = e.threshold if e.threshold is not None else cfg.unimatch.conf_thresh
        manifest = _manifest(cfg, ckpt_path, threshold, c)
        if rt.is_main:
            _claim(out, manifest)
            remove_stale_temps(out)
        rt.barrier()
        zs_dir = labels_dir(d.zero_shot) if d.zero_shot else None
        dst_dir = out / "labels"
        cm_enh, cm_zs = ConfusionMatrix(c), ConfusionMatrix(c)
        counts = {"written": 0, "kept": 0, "gt": 0, "confident": 0, "pixels": 0, "changed": 0, "zs_pixels": 0}
        window = cfg.eval.window or d.crop_size
        for s in splits.unlabeled[rt.rank :: rt.world]:
            zs_file = label_file(zs_dir, s.id) if zs_dir is not None else None
            zs = torch.from_numpy(read_label(zs_file, c)).long() if zs_file and zs_file.is_file() else None
            dst = label_file(dst_dir, s.id)
            label = _existing(dst, c)
            if label is None:
                img = normalize_image(load_image(s.image_path, max_long_side=d.max_long_side))
                prob = predict(model, img.unsqueeze(0).to(rt.device), e.mode, window, rt)[0].cpu()
                conf = prob.max(dim=0).values
                counts["confident"] += int((conf >= threshold).sum())
                counts["pixels"] += conf.numel()
                label = enhanced_label(prob, zs, threshold, e.fallback, e.scope)
                write_label(dst, label.numpy())
                counts["written"] += 1
            else:
                counts["kept"] += 1
            if zs is not None:
                counts["changed"] += int((label.long() != zs).sum())
                counts["zs_pixels"] += zs.numel()
            gt = s.load_label(c) if s.has_label else None
            if gt is not None:
                counts["gt"] += 1
                gt_name = str(s.label_path or f"{s.image_path} (generated label)")
                cm_enh.update(label.numpy(), gt, name=str(dst), gt_name=gt_name)
                zs_map = zs.numpy() if zs is not None else np.full(gt.shape, IGNORE, np.uint8)
                cm_zs.update(zs_map, gt, name=str(zs_file), gt_name=gt_name)
        parts = rt.gather((counts, cm_enh, cm_zs))
        total = {k: sum(p[0][k] for p in parts) for k in counts}
        cm_enh, cm_zs = ConfusionMatrix(c), ConfusionMatrix(c)
        for _, a, b in parts:
            cm_enh.merge(a)
            cm_zs.merge(b)
        report = {
            "out": str(out),
            "labels": str(dst_dir),
            "written": total["written"],
            "kept": total["kept"],
            "images": total["written"] + total["kept"],
            "confident_fraction": total["confident"] / total["pixels"] if total["pixels"] else None,
            "changed_fraction": total["changed"] / total["zs_pixels"] if total["zs_pixels"] else None,
            "threshold": threshold,
            "fallback": e.fallback,
            "scope": e.scope,
            "images_with_gt": total["gt"],
            "miou_enhanced": cm_enh.miou() if total["gt"] else None,
            "miou_zero_shot": cm_zs.miou() if total["gt"] and zs_dir is not None else None,
            "enhanced_report": cm_enh.report(splits.class_names) if total["gt"] else None,
            "config": to_dict(e),
            "seconds": time.perf_counter() - t0,
        }
        if rt.is_main:
            atomic_write_json(out / REPORT, report)
        log.info(
            "enhance: %d written, %d kept, mIoU enhanced %s",
            report["written"],
            report["kept"],
            report["miou_enhanced"],
        )
        return report
    finally:
        rt.close()


def normalize_image(rgb: np.ndarray) -> torch.Tensor:
    """(H, W, 3) uint8 RGB → (3, H, W) float32 normalised (ImageNet mean/std)."""
    return normalize(Image.fromarray(rgb))
