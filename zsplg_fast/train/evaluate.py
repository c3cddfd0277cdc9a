"""Evaluation as UniMatch's ``evaluate`` (supervised.py): batch 1, intersection/union summed over the
dataset with 255 ignored, mIoU over all classes; modes 'original' (the full image, used for VOC and
COCO), 'sliding_window' (windows of ``window`` px at stride 2/3·window, softmax summed) and
'center_crop'. Also folder-vs-folder evaluation of label PNGs (issue 2 §6).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.table import Table
from torch import nn

from zsplg_fast.config.train import TrainConfig
from zsplg_fast.data.labels import read_label
from zsplg_fast.data.sources import Sample, open_source
from zsplg_fast.errors import ConfigError, DatasetError, LabelFormatError
from zsplg_fast.models.segmenter import load_checkpoint, unwrap
from zsplg_fast.train.datasets import IGNORE, ValSet
from zsplg_fast.train.metrics import ConfusionMatrix
from zsplg_fast.train.runtime import Runtime, eval_mode, setup_runtime
from zsplg_fast.utils.io import atomic_write_json

OUT_OF_RANGE = ("error", "count")  # evaluate_folders: predictions holding values >= C
# evaluate_folders: image suffixes that are a ground-truth label in another format than PNG (refused)
_NOT_PNG_LABEL = frozenset({".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"})
Predictor = Callable[[nn.Module, torch.Tensor, int], torch.Tensor]


def _original(model: nn.Module, img: torch.Tensor, window: int) -> torch.Tensor:
    return model(img).float().softmax(dim=1)


def _sliding(model: nn.Module, img: torch.Tensor, window: int) -> torch.Tensor:
    """Windows at stride int(2/3·window), edge windows clipped (as upstream); softmax averaged per pixel."""
    _, _, h, w = img.shape
    step = max(int(window * 2 / 3), 1)
    total = torch.zeros(1, model.config.num_classes, h, w, device=img.device)
    count = torch.zeros(1, 1, h, w, device=img.device)
    for row in range(0, h, step):
        for col in range(0, w, step):
            r1, c1 = min(h, row + window), min(w, col + window)
            total[:, :, row:r1, col:c1] += model(img[:, :, row:r1, col:c1]).float().softmax(dim=1)
            count[:, :, row:r1, col:c1] += 1
    return total / count


PREDICTORS: dict[str, Predictor] = {"original": _original, "sliding_window": _sliding}


def center_crop(img: torch.Tensor, mask: torch.Tensor, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Upstream 'center_crop': the central size×size region of img (1, 3, H, W) and mask (1, H, W)."""
    h, w = img.shape[-2:]
    top, left = max((h - size) // 2, 0), max((w - size) // 2, 0)
    return img[..., top : top + size, left : left + size], mask[..., top : top + size, left : left + size]


@torch.no_grad()
def predict(
    model: nn.Module, img: torch.Tensor, mode: str = "original", window: int = 321, rt: Runtime | None = None
) -> torch.Tensor:
    """img: (1, 3, H, W) normalised → class probabilities (1, C, H, W) float32 in [0, 1]."""
    net = unwrap(model)
    ctx = rt.autocast() if rt is not None else torch.autocast("cpu", enabled=False)
    with eval_mode(net), ctx:
        return PREDICTORS["original" if mode == "center_crop" else mode](net, img, window)


@torch.no_grad()
def evaluate_model(
    model: nn.Module,
    samples: Sequence[Sample],
    num_classes: int,
    mode: str = "original",
    window: int = 321,
    rt: Runtime | None = None,
    max_long_side: int = 16384,
) -> ConfusionMatrix:
    """Confusion matrix of ``model`` on ``samples`` (each rank takes every world-th image; merged)."""
    device = rt.device if rt is not None else next(unwrap(model).parameters()).device
    rank, world = (rt.rank, rt.world) if rt is not None else (0, 1)
    ds = ValSet(samples, max_long_side, num_classes)
    cm = ConfusionMatrix(num_classes)
    for i in range(rank, len(ds), world):
        img, mask, _ = ds[i]
        img, mask = img.unsqueeze(0).to(device), mask.unsqueeze(0)
        if mode == "center_crop":
            img, mask = center_crop(img, mask, window)
        pred = predict(model, img, mode, window, rt).argmax(dim=1).cpu().numpy()
        cm.update(pred[0], mask[0].numpy(), name=str(samples[i].image_path))
    if rt is not None and rt.distributed:
        parts = rt.gather(cm)
        cm = ConfusionMatrix(num_classes)
        for p in parts:
            cm.merge(p)
    return cm


def evaluate_checkpoint(
    cfg: TrainConfig,
    checkpoint: str | Path,
    samples: Sequence[Sample],
    rt: Runtime | None = None,
    out: str | Path | None = None,
) -> dict[str, Any]:
    """Rebuild a saved segmenter and evaluate it on ``samples`` with ``cfg.eval`` (mode, window).

    Returns the :meth:`ConfusionMatrix.report` dict plus ``checkpoint``, ``mode``, ``images``; written
    to ``out`` as JSON when given.
    """
    device = rt.device if rt is not None else torch.device("cpu")
    model, ckpt = load_checkpoint(checkpoint, device)
    num_classes = model.config.num_classes
    window = cfg.eval.window or cfg.data.crop_size
    cm = evaluate_model(model, samples, num_classes, cfg.eval.mode, window, rt, cfg.data.max_long_side)
    report = {
        **cm.report(ckpt.get("class_names")),
        "checkpoint": str(checkpoint),
        "mode": cfg.eval.mode,
        "images": len(samples),
    }
    if out is not None and (rt is None or rt.is_main):
        atomic_write_json(out, report)
    return report


def evaluate_split(
    cfg: TrainConfig, checkpoint: str | Path, split: str | None = None, out: str | Path | None = None
) -> dict[str, Any]:
    """Evaluate ``checkpoint`` on ``split`` (default ``cfg.data.val``) of ``cfg.data.source``; sets up
    its own runtime (DDP-sharded under torchrun). Returns :func:`evaluate_checkpoint`'s report."""
    name = split or cfg.data.val
    if cfg.data.source is None or name is None:
        raise ConfigError("train.data.source", cfg.data.source, "evaluation needs a dataset and a split")
    rt = setup_runtime(cfg.run)
    try:
        samples = open_source(cfg.data.source, name).samples
        return {**evaluate_checkpoint(cfg, checkpoint, samples, rt, out), "split": name}
    finally:
        rt.close()


def evaluate_folders(
    pred_dir: str | Path,
    gt_dir: str | Path,
    class_names: Sequence[str],
    out: str | Path | None = None,
    missing: str = "error",
    out_of_range: str = "error",
) -> dict[str, Any]:
    """mIoU of label PNGs in ``pred_dir`` against same-named PNGs in ``gt_dir`` (recursive).

    A ground-truth file in another image format (``x.jpg``) is refused, named (labels must be PNG),
    rather than left out.

    Ground truth must hold values in {0..C-1, 255}. A prediction of 255 counts as a miss for the true
    class. ``missing``: 'error' (default) refuses a ground-truth file without a prediction, 'skip' leaves
    those images out (their count is reported). ``out_of_range``: 'error' (default) refuses predictions
    holding other values (>= C), naming the files; 'count' scores them as misses and reports the files,
    values and pixels under ``out_of_range``.
    """
    if out_of_range not in OUT_OF_RANGE:
        raise ConfigError("out_of_range", out_of_range, "unknown mode", valid=", ".join(OUT_OF_RANGE))
    gt_root, pred_root = Path(gt_dir), Path(pred_dir)
    for p in (gt_root, pred_root):
        if not p.is_dir():
            raise DatasetError(p, "folder not found")
    gts = sorted(f for f in gt_root.rglob("*") if f.suffix.lower() == ".png" and f.is_file())
    not_png = sorted(f for f in gt_root.rglob("*") if f.suffix.lower() in _NOT_PNG_LABEL and f.is_file())
    if not_png:
        also = f" (and {len(not_png) - 1} more)" if len(not_png) > 1 else ""
        raise LabelFormatError(
            not_png[0],
            f"ground-truth labels must be PNG{also}; re-save them as palette PNGs of class indices",
        )
    if not gts:
        raise DatasetError(gt_root, "no .png label files found")
    cm = ConfusionMatrix(len(class_names))
    stray: dict[str, tuple[list[int], int]] = {}  # prediction file → (values >= C, pixels)
    absent = [g for g in gts if not (pred_root / g.relative_to(gt_root)).is_file()]
    if len(absent) == len(gts):  # --missing skip included: never an mIoU over no image
        raise DatasetError(
            pred_root,
            f"no prediction for any of the {len(gts)} ground-truth files of {gt_root} (same relative "
            "path and name, .png); nothing to evaluate: check --pred",
        )
    if absent and missing == "error":
        raise DatasetError(
            pred_root / absent[0].relative_to(gt_root),
            f"no prediction for {len(absent)} of {len(gts)} ground-truth files; "
            "pass --missing skip to leave them out",
        )
    for g in gts:
        p = pred_root / g.relative_to(gt_root)
        if not p.is_file():
            continue
        pred = read_label(p)
        bad = [int(v) for v in np.unique(pred) if v >= len(class_names) and v != IGNORE]
        if bad:
            stray[str(p)] = (bad, int(np.isin(pred, bad).sum()))
        cm.update(pred, read_label(g, len(class_names)), name=str(p), gt_name=str(g))
    if stray and out_of_range == "error":
        first, (values, _) = next(iter(stray.items()))
        others = [f for f in stray if f != first]
        raise LabelFormatError(
            first,
            f"prediction values outside 0..{len(class_names) - 1} and 255 for {len(class_names)} classes, "
            f"in {len(stray)} of {len(gts) - len(absent)} files"
            + (f" (also {', '.join(others[:3])}{' ...' if len(others) > 3 else ''})" if others else "")
            + "; check the class list, or pass --out-of-range count to score them as misses",
            values,
        )
    report = {**cm.report(class_names), "images": len(gts) - len(absent), "missing": len(absent)}
    report["out_of_range"] = {
        "files": {f: v for f, (v, _) in stray.items()},
        "pixels": sum(n for _, n in stray.values()),
    }
    report.update(pred=str(pred_root), gt=str(gt_root))
    if out is not None:
        atomic_write_json(out, report)
    return report


def report_table(report: dict[str, Any], title: str = "per-class IoU") -> Table:
    """A rich table: one row per class (index, name, IoU %), then mIoU over all and over present classes."""
    t = Table(title=title)
    for col, just in (("#", "right"), ("class", "left"), ("IoU %", "right")):
        t.add_column(col, justify=just)  # type: ignore[arg-type]
    for row in report["per_class"]:
        mark = "" if row["present"] else " (absent)"
        t.add_row(str(row["index"]), f"{row['name']}{mark}", f"{100 * row['iou']:.2f}")
    t.add_section()
    t.add_row("", "mIoU", f"{100 * report['miou']:.2f}")
    t.add_row("", "mIoU (present)", f"{100 * report['miou_present']:.2f}")
    return t


def load_report(path: str | Path) -> dict[str, Any]:
    """Read a report JSON written by the functions above."""
    return json.loads(Path(path).read_text())
