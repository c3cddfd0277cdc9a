"""Final supervised training on ground truth + enhanced labels (follows UniMatch ``supervised.py``:
weak augmentation with 255 padding, CE (or OHEM) ignoring 255, the same SGD groups and poly schedule).

With ``supervised.use_enhanced`` and ``data.enhanced`` set, the unlabeled split joins the labeled
split with its enhanced labels; otherwise this trains the labeled-only baseline.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from zsplg_fast.config.train import TrainConfig
from zsplg_fast.errors import ConfigError, TrainingError
from zsplg_fast.train.common import build_model, open_splits, run_preflight
from zsplg_fast.train.datasets import EpochSampler, LabeledSet, make_loader, with_labels
from zsplg_fast.train.loop import Stage, check_run_folder, fit, restore_or_refuse
from zsplg_fast.train.losses import CRITERIA
from zsplg_fast.train.runtime import make_scaler, seed_all, setup_runtime, to_device

STREAM_SUP = 11


def train_supervised(cfg: TrainConfig, out: str | Path, resume: bool = False) -> dict[str, Any]:
    """Train the segmenter supervised into ``out`` (same files as :func:`train_unimatch`).

    Returns the stage summary (``miou``, ``best_miou``, ``checkpoint``, ``complete``, ``images`` …).
    """
    s = cfg.supervised
    enhanced = cfg.data.enhanced if s.use_enhanced else None
    if s.use_enhanced and cfg.data.enhanced is None:
        raise ConfigError(
            "train.data.enhanced",
            None,
            "supervised.use_enhanced is true but no enhanced-label folder is given",
            "the out folder of `zsplg-fast enhance`, or set train.supervised.use_enhanced=false",
        )
    check_run_folder(out, "supervised")  # before any model or data loads
    rt = setup_runtime(cfg.run)
    try:
        seed_all(cfg.run.seed, rt.rank)
        splits = open_splits(cfg, ("labeled", "unlabeled", "val") if enhanced else ("labeled", "val"))
        train = list(splits.labeled) + (with_labels(splits.unlabeled, enhanced) if enhanced else [])
        pre = run_preflight(cfg, rt, train + splits.val, splits.num_classes, None, train)
        ds = LabeledSet(
            train, cfg.data.crop_size, None, cfg.data.max_long_side, cfg.data.scale, splits.num_classes
        )
        spe = EpochSampler.batches_per_epoch(len(ds), s.batch_size, rt.world)
        if spe == 0:
            raise TrainingError(
                "supervised", f"{len(ds)} images give no batch of {s.batch_size} per process × {rt.world}"
            )
        model, optimizer, lr = build_model(cfg, splits.num_classes, rt, s.batch_size)
        o = cfg.optim
        criterion = CRITERIA[o.criterion](thresh=o.ohem_thresh, min_kept=o.ohem_min_kept).to(rt.device)
        stage = Stage(
            "supervised",
            cfg,
            s,
            Path(out),
            rt,
            model,
            optimizer,
            lr,
            splits.class_names,
            splits.val,
            spe,
            s.max_iters or spe * s.epochs,
            scaler=make_scaler(rt),
            unused_data_keys=("zero_shot",) if enhanced else ("zero_shot", "enhanced", "unlabeled"),
        )
        restore_or_refuse(stage, resume)
        seed, w, pin = cfg.run.seed, cfg.data.workers, rt.cuda

        def batches(epoch: int, skip: int) -> Any:
            sampler = EpochSampler(
                len(ds), s.batch_size, seed, epoch, STREAM_SUP, None, rt.world, rt.rank, skip
            )
            return make_loader(ds, sampler, w, pin)

        def step(batch: Any, it: int) -> tuple[torch.Tensor, dict[str, float], list[str]]:
            img, mask, idx = to_device(batch, rt.device)
            with rt.autocast():
                pred = model(img)
            loss = criterion(pred.float(), mask)
            return loss, {"loss": loss.item()}, [ds.samples[int(i)].id for i in idx]

        summary = fit(stage, batches, step)
        return {**summary, "preflight": pre, "images": len(ds), "enhanced": enhanced}
    finally:
        rt.close()
