"""The iteration loop shared by UniMatch and supervised training: poly lr, AMP, finiteness check,
epoch-end evaluation (best kept), atomic checkpoints and exact resume.

Follows UniMatch unimatch.py / supervised.py for the schedule (lr = base·(1 − it/total)^0.9 for the
backbone group, × lr_multi for the head group; set before step ``it``, where upstream sets it after
the step, so its steps run one iteration behind) and for the per-epoch evaluate → latest/best
checkpoints. ``latest.pth`` also stores the optimizer (and GradScaler) state, the iteration, and
every rank's python/numpy/torch RNG state; data order and augmentations are functions of
(seed, epoch, position) (see ``datasets.EpochSampler``), so a resumed run equals a straight one.
"""

from __future__ import annotations

import errno
import logging
import math
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from zsplg_fast.config import fingerprint, to_dict
from zsplg_fast.config.train import TrainConfig
from zsplg_fast.data.sources import Sample
from zsplg_fast.errors import OutputExistsError, OutputWriteError, TrainingError
from zsplg_fast.models.safe_load import load_torch_file
from zsplg_fast.models.segmenter import save_checkpoint, unwrap
from zsplg_fast.train.common import poly_lr
from zsplg_fast.train.evaluate import evaluate_model
from zsplg_fast.train.runtime import Runtime, rng_state, set_rng_state
from zsplg_fast.utils.io import atomic_write_json
from zsplg_fast.utils.outdir import check_output, claim_output, json_with

log = logging.getLogger("zsplg_fast.train")

LATEST, BEST, FINAL, METRICS = "latest.pth", "best.pth", "final.pth", "metrics.json"
COMMANDS = {"unimatch": "unimatch", "supervised": "train"}  # stage → the command its folder marker names
# A run folder made before markers existed: its metrics.json with our keys. Not a file named latest.pth:
# a folder of the user's may hold one, and the marker rule comes first.
LEGACY = (json_with(METRICS, "stage", "iterations", "total_iters", "checkpoint"),)


def check_run_folder(out: str | Path, stage: str) -> None:
    """Writes nothing: refuse a run folder that is not this stage's (the user's files, another
    command's folder), a file, or an unwritable place. Call before any model is built.

    Under torchrun only rank 0 writes the run folder, so only rank 0 checks it: another rank looking
    while rank 0 claims it (its marker's temp file) would see a folder of foreign files."""
    if int(os.environ.get("RANK", "0")) > 0:
        return
    check_output(out, COMMANDS.get(stage, stage), legacy=LEGACY)


# step(batch, iteration) → (loss, scalars to log, ids of the batch's samples)
StepFn = Callable[[Any, int], tuple[torch.Tensor, dict[str, float], list[str]]]
BatchesFn = Callable[[int, int], Iterable[Any]]  # (epoch, batches to skip) → batches


@dataclass
class Stage:
    """One training stage in progress (everything the loop and its checkpoints need)."""

    name: str
    cfg: TrainConfig
    stage_cfg: Any
    out: Path
    rt: Runtime
    model: nn.Module
    optimizer: torch.optim.Optimizer
    base_lr: float
    class_names: list[str]
    val: list[Sample]
    steps_per_epoch: int
    total_iters: int
    it: int = 0
    best: float = 0.0
    history: list[dict[str, Any]] = field(default_factory=list)
    last_report: dict[str, Any] | None = None
    scaler: torch.amp.GradScaler | None = None
    unused_data_keys: tuple[str, ...] = ()  # train.data keys this stage ignores (not fingerprinted)

    @property
    def fingerprint(self) -> str:
        """What must not change across a resume: model, data, optimiser, this stage, seed, AMP, world."""
        d = to_dict(self.cfg)
        skip = ("workers", "preflight", "preflight_cache", *self.unused_data_keys)
        data = {k: v for k, v in d["data"].items() if k not in skip}
        keep = {"model": d["model"], "data": data, "optim": d["optim"], "stage": to_dict(self.stage_cfg)}
        keep.update(seed=self.cfg.run.seed, amp=self.cfg.run.amp, world=self.rt.world, name=self.name)
        return fingerprint(keep)


def _train_state(stage: Stage, rngs: list[Any]) -> dict[str, Any]:
    return {
        "stage": stage.name,
        "fingerprint": stage.fingerprint,
        "iteration": stage.it,
        "total_iters": stage.total_iters,
        "best": stage.best,
        "history": stage.history,
        "last_report": stage.last_report,
        "optimizer": stage.optimizer.state_dict(),
        "scaler": stage.scaler.state_dict() if stage.scaler is not None else None,
        "rng": rngs,
        "world": stage.rt.world,
        "config": to_dict(stage.cfg),
    }


def save_latest(stage: Stage) -> None:
    """Collective: gather every rank's RNG state; rank 0 writes ``latest.pth`` atomically."""
    rngs = stage.rt.gather(rng_state())
    if stage.rt.is_main:
        save_checkpoint(
            stage.out / LATEST, stage.model, stage.class_names, {"train_state": _train_state(stage, rngs)}
        )
    stage.rt.barrier()


def restore_or_refuse(stage: Stage, resume: bool) -> bool:
    """Load ``latest.pth`` when resuming (True if loaded); refuse to start over an existing run, or in
    a folder that is not this stage's run folder. Claims ``stage.out`` (its marker) once it may run."""
    latest = stage.out / LATEST
    check_run_folder(stage.out, stage.name)
    if not latest.is_file():
        if resume:
            log.warning("%s: nothing to resume in %s, starting from scratch", stage.name, stage.out)
        _claim(stage)
        return False
    if not resume:
        raise OutputExistsError(
            stage.out, f"holds a {stage.name} run; pass --resume to continue it or choose another --out"
        )
    obj = load_torch_file(latest, "training checkpoint")  # weights_only=True: see models/safe_load.py
    ts = obj["train_state"]
    if ts["fingerprint"] != stage.fingerprint:
        raise OutputExistsError(
            stage.out,
            f"{LATEST} was made with another config or world size; "
            "choose another --out or restore the config",
        )
    _claim(stage)
    unwrap(stage.model).load_state_dict(obj["state_dict"])
    stage.optimizer.load_state_dict(ts["optimizer"])
    if stage.scaler is not None and ts["scaler"] is not None:
        stage.scaler.load_state_dict(ts["scaler"])
    stage.it, stage.best, stage.history = ts["iteration"], ts["best"], ts["history"]
    stage.last_report = ts["last_report"]
    set_rng_state(ts["rng"][stage.rt.rank])
    log.info("%s: resumed at iteration %d / %d", stage.name, stage.it, stage.total_iters)
    return True


def _claim(stage: Stage) -> None:
    if stage.rt.is_main:
        claim_output(stage.out, COMMANDS.get(stage.name, stage.name), legacy=LEGACY)


def _set_lr(stage: Stage) -> None:
    lr = poly_lr(stage.base_lr, stage.it, stage.total_iters, stage.cfg.optim.poly_power)
    stage.optimizer.param_groups[0]["lr"] = lr
    stage.optimizer.param_groups[1]["lr"] = lr * stage.cfg.optim.lr_multi


def _update(stage: Stage, loss: torch.Tensor, ids: list[str]) -> None:
    finite = bool(torch.isfinite(loss).item())
    if stage.rt.distributed:
        finite = stage.rt.all_mean(float(finite)) == 1.0
    if not finite:
        raise TrainingError(
            f"{stage.name} iteration {stage.it} (epoch {stage.it // stage.steps_per_epoch})",
            f"non-finite loss {loss.item()} in a batch of {ids[:8]} (or on another rank); "
            "lower optim.lr or check these images and labels",
        )
    stage.optimizer.zero_grad(set_to_none=True)
    if stage.scaler is not None:
        stage.scaler.scale(loss).backward()
        stage.scaler.step(stage.optimizer)
        stage.scaler.update()
    else:
        loss.backward()
        stage.optimizer.step()


def _evaluate(stage: Stage) -> None:
    c = stage.cfg
    cm = evaluate_model(
        stage.model,
        stage.val,
        len(stage.class_names),
        c.eval.mode,
        c.eval.window or c.data.crop_size,
        stage.rt,
        c.data.max_long_side,
    )
    report = cm.report(stage.class_names)
    epoch = math.ceil(stage.it / stage.steps_per_epoch) - 1
    stage.last_report = {**report, "iteration": stage.it, "epoch": epoch, "mode": c.eval.mode}
    stage.history.append({"iteration": stage.it, "epoch": epoch, "miou": report["miou"]})
    log.info("%s: iteration %d epoch %d val mIoU %.2f", stage.name, stage.it, epoch, 100 * report["miou"])
    if report["miou"] > stage.best or not stage.history[:-1]:
        stage.best = max(stage.best, report["miou"])
        if stage.rt.is_main:
            save_checkpoint(stage.out / BEST, stage.model, stage.class_names, {"report": stage.last_report})


def _eval_due(stage: Stage) -> bool:
    every = stage.cfg.eval.every_epochs
    if not stage.val:
        return False
    if stage.it == stage.total_iters:
        return True
    return every > 0 and (stage.it // stage.steps_per_epoch) % every == 0


def fit(stage: Stage, batches: BatchesFn, step: StepFn) -> dict[str, Any]:
    """Run ``stage`` from ``stage.it`` to the end (or ``run.stop_after``); returns the stage summary."""
    run = stage.cfg.run
    t0 = time.perf_counter()
    stop = min(stage.total_iters, run.stop_after) if run.stop_after else stage.total_iters
    try:
        return _fit(stage, batches, step, stop, t0)
    except OutputWriteError as e:  # a checkpoint could not be written: say where training stands
        where = f"{stage.name} stopped at iteration {stage.it}/{stage.total_iters}"
        last = f", last checkpoint {stage.out / LATEST}" if (stage.out / LATEST).is_file() else ""
        raise OutputWriteError(e.path, e.errno or errno.EIO, f"{where}{last}; rerun with --resume") from e


def _fit(stage: Stage, batches: BatchesFn, step: StepFn, stop: int, t0: float) -> dict[str, Any]:
    run = stage.cfg.run
    spe = stage.steps_per_epoch
    stage.model.train()
    while stage.it < stop:
        epoch, skip = divmod(stage.it, spe)
        for batch in batches(epoch, skip):
            _set_lr(stage)
            loss, scalars, ids = step(batch, stage.it)
            _update(stage, loss, ids)
            stage.it += 1
            if stage.rt.is_main and (stage.it % run.log_every == 0 or stage.it == 1):
                parts = " ".join(f"{k} {v:.4f}" for k, v in scalars.items())
                log.info(
                    "%s: iteration %d/%d lr %.2e %s",
                    stage.name,
                    stage.it,
                    stage.total_iters,
                    stage.optimizer.param_groups[0]["lr"],
                    parts,
                )
            if stage.it >= stop or stage.it % spe == 0:
                break
            if run.checkpoint_every and stage.it % run.checkpoint_every == 0:
                save_latest(stage)
        epoch_end = stage.it % spe == 0 or stage.it == stage.total_iters
        if epoch_end and _eval_due(stage):
            _evaluate(stage)
        save_latest(stage)
    seconds = time.perf_counter() - t0
    complete = stage.it >= stage.total_iters
    final = stage.out / FINAL
    summary = {
        "stage": stage.name,
        "out": str(stage.out),
        "complete": complete,
        "iterations": stage.it,
        "total_iters": stage.total_iters,
        "miou": stage.last_report["miou"] if stage.last_report else None,
        "best_miou": stage.best if stage.history else None,
        "report": stage.last_report,
        "history": stage.history,
        "checkpoint": str(final if complete else stage.out / LATEST),
        "seconds": seconds,
        "class_names": stage.class_names,
    }
    if complete and stage.rt.is_main:
        if not final.is_file():
            save_checkpoint(
                final, stage.model, stage.class_names, {"report": stage.last_report, "stage": stage.name}
            )
        atomic_write_json(stage.out / METRICS, {k: v for k, v in summary.items() if k != "seconds"})
    stage.rt.barrier()
    return summary
