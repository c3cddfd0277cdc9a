"""UniMatch semi-supervised training with zero-shot fusion.

Follows UniMatch ``unimatch.py``: per iteration one labeled batch, one unlabeled batch and one "mix"
batch from a second pass over the unlabeled loader; the mix batch is predicted in eval mode under
no_grad; its strong views are CutMix-pasted into the unlabeled strong views and its pseudo labels,
confidences and ignore maps into the targets; one forward of labeled + weak views with feature
perturbation, one forward of both strong views; loss = (x + 0.25·s1 + 0.25·s2 + 0.5·fp) / 2.

Zero-shot fusion (``unimatch.fusion``): ``online`` adds, for pixels whose confidence is below τ,
label-smoothed CE to the zero-shot label (CutMix carries the mix image's zero-shot label along);
``two_stage`` and ``none`` train plain UniMatch (``two_stage`` fuses at enhance time).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from torch import nn

from zsplg_fast.config.train import TrainConfig, UniMatchConfig
from zsplg_fast.errors import TrainingError
from zsplg_fast.models.segmenter import unwrap
from zsplg_fast.train.common import build_model, open_splits, run_preflight, zero_shot_files
from zsplg_fast.train.datasets import EpochSampler, LabeledSet, UnlabeledSet, make_loader
from zsplg_fast.train.loop import Stage, check_run_folder, fit, restore_or_refuse
from zsplg_fast.train.losses import CRITERIA, UniMatchLoss, paste_images, targets_from_logits, unimatch_loss
from zsplg_fast.train.runtime import Runtime, make_scaler, seed_all, setup_runtime, to_device

log = logging.getLogger("zsplg_fast.train")

# Sampler streams: labeled, unlabeled, mix (distinct augmentation seeds).
STREAM_L, STREAM_U, STREAM_MIX = 1, 2, 3
# Which fusion rule the training loss applies for each reading.
LOSS_FUSION = {"online": "online", "two_stage": "none", "none": "none"}


def unimatch_step(
    model: nn.Module,
    batch_x: tuple[torch.Tensor, ...],
    batch_u: tuple[torch.Tensor, ...],
    batch_mix: tuple[torch.Tensor, ...],
    criterion_l: nn.Module,
    ucfg: UniMatchConfig,
    rt: Runtime,
) -> UniMatchLoss:
    """One UniMatch forward on device tensors; returns the loss (not yet backpropagated) and its parts.

    batch_x: (img (B,3,S,S), mask (B,S,S) int64, idx); batch_u / batch_mix: (img_w, img_s1, img_s2,
    ignore, box1, box2, zero_shot, idx) as :class:`UnlabeledSet` yields them.
    """
    img_x, mask_x = batch_x[0], batch_x[1]
    img_w, img_s1, img_s2, ignore, box1, box2, zs = batch_u[:7]
    mix_w, mix_s1, mix_s2, ignore_mix, _, _, zs_mix = batch_mix[:7]

    with torch.no_grad(), rt.autocast():
        net = unwrap(model)
        net.eval()
        mix = targets_from_logits(net(mix_w), ignore_mix, zs_mix)
    img_s1 = paste_images(img_s1, mix_s1, box1)
    img_s2 = paste_images(img_s2, mix_s2, box2)

    model.train()
    nx = img_x.shape[0]
    with rt.autocast():
        preds, preds_fp = model(torch.cat((img_x, img_w)), True)
        pred_x, pred_w = preds[:nx], preds[nx:]
        pred_fp = preds_fp[nx:]
        pred_s1, pred_s2 = model(torch.cat((img_s1, img_s2))).chunk(2)
    weak = targets_from_logits(pred_w.detach(), ignore, zs)
    return unimatch_loss(
        criterion_l,
        pred_x,
        mask_x,
        pred_s1,
        pred_s2,
        pred_fp,
        weak,
        mix,
        box1,
        box2,
        ucfg.conf_thresh,
        LOSS_FUSION[ucfg.fusion],
        ucfg.smoothing,
    )


def train_unimatch(cfg: TrainConfig, out: str | Path, resume: bool = False) -> dict[str, Any]:
    """Train UniMatch on ``cfg.data`` (labeled + unlabeled [+ zero-shot labels]) into ``out``.

    Writes ``out/latest.pth`` (resumable), ``best.pth``, ``final.pth`` (model config + weights + class
    names, for enhance / evaluate / export) and ``metrics.json``. Under torchrun each process takes its
    share of every batch (DDP). Returns the stage summary: ``miou`` (last val), ``best_miou``,
    ``checkpoint``, ``complete``, ``iterations``, ``seconds``, ``history``, ``preflight``.
    """
    u = cfg.unimatch
    check_run_folder(out, "unimatch")  # before any model or data loads
    rt = setup_runtime(cfg.run)
    try:
        seed_all(cfg.run.seed, rt.rank)
        splits = open_splits(cfg)
        zs_dir = cfg.data.zero_shot if u.fusion == "online" else None
        if u.fusion == "online" and zs_dir is None:
            log.warning("unimatch.fusion=online without data.zero_shot: training plain UniMatch")
        pre = run_preflight(
            cfg,
            rt,
            splits.labeled + splits.unlabeled + splits.val,
            splits.num_classes,
            zero_shot_files(splits.unlabeled, zs_dir),
            splits.labeled,
        )
        crop, bs = cfg.data.crop_size, u.batch_size
        nc = splits.num_classes
        ds_u = UnlabeledSet(splits.unlabeled, crop, zs_dir, cfg.data.max_long_side, cfg.data.scale, nc)
        ds_l = LabeledSet(splits.labeled, crop, len(ds_u), cfg.data.max_long_side, cfg.data.scale, nc)
        spe = EpochSampler.batches_per_epoch(len(ds_u), bs, rt.world)
        if spe == 0:
            raise TrainingError(
                "unimatch", f"{len(ds_u)} unlabeled images give no batch of {bs} per process × {rt.world}"
            )
        model, optimizer, lr = build_model(cfg, splits.num_classes, rt, bs)
        o = cfg.optim
        criterion_l = CRITERIA[o.criterion](thresh=o.ohem_thresh, min_kept=o.ohem_min_kept).to(rt.device)
        stage = Stage(
            "unimatch",
            cfg,
            u,
            Path(out),
            rt,
            model,
            optimizer,
            lr,
            splits.class_names,
            splits.val,
            spe,
            u.max_iters or spe * u.epochs,
            scaler=make_scaler(rt),
            unused_data_keys=("enhanced",) if u.fusion == "online" else ("enhanced", "zero_shot"),
        )
        restore_or_refuse(stage, resume)
        mix_order = STREAM_U if u.mix_order == "official" else STREAM_MIX
        seed, w, pin = cfg.run.seed, cfg.data.workers, rt.cuda

        def batches(epoch: int, skip: int) -> Any:
            def sampler(n: int, stream: int, order: int | None = None) -> EpochSampler:
                return EpochSampler(n, bs, seed, epoch, stream, order, rt.world, rt.rank, skip)

            return zip(
                make_loader(ds_l, sampler(len(ds_l), STREAM_L), w, pin),
                make_loader(ds_u, sampler(len(ds_u), STREAM_U), w, pin),
                make_loader(ds_u, sampler(len(ds_u), STREAM_MIX, mix_order), w, pin),
                strict=True,
            )

        def step(batch: Any, it: int) -> tuple[torch.Tensor, dict[str, float], list[str]]:
            bx, bu, bm = (to_device(b, rt.device) for b in batch)
            res = unimatch_step(model, bx, bu, bm, criterion_l, u, rt)
            ids = [ds_l.samples[int(i)].id for i in bx[2]] + [ds_u.samples[int(i)].id for i in bu[7]]
            scalars = {
                "loss": res.loss.item(),
                "x": res.loss_x.item(),
                "s": (res.loss_s1.item() + res.loss_s2.item()) / 2,
                "fp": res.loss_fp.item(),
                "mask_ratio": res.mask_ratio,
            }
            return res.loss, scalars, ids

        summary = fit(stage, batches, step)
        return {**summary, "preflight": pre, "fusion": u.fusion}
    finally:
        rt.close()
