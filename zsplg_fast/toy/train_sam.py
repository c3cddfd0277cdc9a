"""Train the toy SAM on the synthetic shapes world (point, box and corrective-click prompts).

Follows the SAM paper's recipe (Kirillov et al. 2023, §3 and appendix A: focal:dice 20:1 on the best of
the 3 multimask outputs, MSE on the IoU head, iterative corrective clicks), read not copied. Also:
25 % of point prompts fall on background, with IoU target 0 and no mask loss, so the IoU head learns to
score "no object" low (what lets AMG drop background points). Deterministic for a seed: images come
from ``numpy.random.default_rng([seed, step, i])``; prompts from a per-step generator.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from segment_anything.modeling import Sam
from segment_anything.utils.transforms import ResizeLongestSide
from torchvision.ops import sigmoid_focal_loss

from zsplg_fast.data.synthetic import MAX_CLASSES, render_sample
from zsplg_fast.toy.sam import TOY_SAM_IMAGE_SIZE, build_sam_toy
from zsplg_fast.utils.io import atomic_write_json, atomic_write_with

log = logging.getLogger(__name__)
_DATA_STREAM = 71  # separates training images from the toy world's split seeds
_LOSS_SIZE = 128  # masks are compared at half the input resolution (2× the decoder's 64×64 output)


@dataclass
class SamTrainConfig:
    """Toy-SAM training settings (steps drive the LR schedule; nothing depends on wall time)."""

    steps: int = 1500
    seed: int = 0
    images_per_step: int = 8
    points_per_image: int = 6
    boxes_per_image: int = 2
    background_fraction: float = 0.25
    lr: float = 8e-4
    weight_decay: float = 0.05
    warmup: int = 100
    grad_clip: float = 1.0
    threads: int = 1
    log_every: int = 25


@dataclass
class _Prompts:
    """Prompts of one image in the 256-px input frame."""

    points: torch.Tensor  # (P, 1, 2) float
    point_gt: torch.Tensor  # (P, 128, 128) float in [0, 1] (area fraction); zero for background points
    is_object: torch.Tensor  # (P,) bool
    boxes: torch.Tensor  # (B, 4) float xyxy
    box_gt: torch.Tensor  # (B, 128, 128) float in [0, 1]


def _to_input_frame(masks: np.ndarray, new_hw: tuple[int, int]) -> torch.Tensor:
    """(N, H, W) bool → (N, 128, 128) float: resized like the image, zero-padded, area-pooled by 2."""
    t = torch.from_numpy(masks.astype(np.float32))[:, None]
    t = F.interpolate(t, size=new_hw, mode="nearest")
    t = F.pad(t, (0, TOY_SAM_IMAGE_SIZE - new_hw[1], 0, TOY_SAM_IMAGE_SIZE - new_hw[0]))
    return F.avg_pool2d(t, TOY_SAM_IMAGE_SIZE // _LOSS_SIZE)[:, 0]


def _sample_image(
    cfg: SamTrainConfig, step: int, i: int, sam: Sam, resize: ResizeLongestSide
) -> tuple[torch.Tensor, _Prompts]:
    """One training image (1, 3, 256, 256) preprocessed for ``sam`` and its prompts with GT masks."""
    rng = np.random.default_rng([cfg.seed, _DATA_STREAM, step, i])
    h, w = int(rng.integers(224, 321)), int(rng.integers(224, 321))
    s = render_sample(rng, (h, w), MAX_CLASSES)
    img = resize.apply_image(s.image)
    new_hw = img.shape[:2]
    x = sam.preprocess(torch.from_numpy(img).permute(2, 0, 1)[None].float())
    inst = np.stack([m for _, m in s.instances])  # (N, H, W)
    gt = _to_input_frame(inst, new_hw)
    pts, pgt, obj = [], [], []
    bg_yx = np.argwhere(s.label == 0)
    for _ in range(cfg.points_per_image):
        if rng.random() < cfg.background_fraction and len(bg_yx):
            y, x0 = bg_yx[int(rng.integers(len(bg_yx)))]
            pgt.append(torch.zeros(_LOSS_SIZE, _LOSS_SIZE))
            obj.append(False)
        else:
            k = int(rng.integers(len(inst)))
            yx = np.argwhere(inst[k])
            y, x0 = yx[int(rng.integers(len(yx)))]
            pgt.append(gt[k])
            obj.append(True)
        pts.append(resize.apply_coords(np.array([[x0 + 0.5, y + 0.5]], np.float64), (h, w)))
    boxes, bgt = [], []
    for _ in range(cfg.boxes_per_image):
        k = int(rng.integers(len(inst)))
        ys, xs = np.nonzero(inst[k])
        box = np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], np.float64)
        box += rng.normal(0, 0.05 * max(box[2] - box[0], box[3] - box[1]), 4)  # jitter like SAM's 10 %
        boxes.append(resize.apply_boxes(box[None], (h, w))[0])
        bgt.append(gt[k])
    prompts = _Prompts(
        points=torch.tensor(np.stack(pts), dtype=torch.float32),
        point_gt=torch.stack(pgt),
        is_object=torch.tensor(obj),
        boxes=torch.tensor(np.stack(boxes), dtype=torch.float32),
        box_gt=torch.stack(bgt),
    )
    return x, prompts


def _decode(
    sam: Sam,
    emb: torch.Tensor,
    points: tuple[torch.Tensor, torch.Tensor] | None,
    boxes: torch.Tensor | None,
    multimask: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(P, M, 128, 128) logits over the padded input frame and (P, M) IoU predictions for one embedding."""
    sparse, dense = sam.prompt_encoder(points=points, boxes=boxes, masks=None)
    low, iou = sam.mask_decoder(
        image_embeddings=emb,
        image_pe=sam.prompt_encoder.get_dense_pe(),
        sparse_prompt_embeddings=sparse,
        dense_prompt_embeddings=dense,
        multimask_output=multimask,
    )
    return F.interpolate(low, (_LOSS_SIZE, _LOSS_SIZE), mode="bilinear", align_corners=False), iou


def _mask_terms(logits: torch.Tensor, gt: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-mask loss 20·focal + dice and actual IoU. logits (P, M, S, S), gt (P, S, S) → (P, M) each."""
    tgt = gt[:, None].expand_as(logits)
    focal = sigmoid_focal_loss(logits, tgt, alpha=0.25, gamma=2.0, reduction="none").mean((-1, -2))
    prob = logits.sigmoid()
    dice = 1 - (2 * (prob * tgt).sum((-1, -2)) + 1) / (prob.sum((-1, -2)) + tgt.sum((-1, -2)) + 1)
    with torch.no_grad():
        pred = logits > 0
        inter = (pred & (tgt > 0.5)).sum((-1, -2)).float()
        union = (pred | (tgt > 0.5)).sum((-1, -2)).float()
        iou = inter / union.clamp(min=1)
    return 20 * focal + dice, iou


def _corrective_click(
    logits: torch.Tensor, gt: torch.Tensor, gen: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """A click in each prediction's error region: (P, 1, 2) xy in the 256 frame, (P, 1) labels (1 = add)."""
    err = (logits.detach() > 0) != (gt > 0.5)  # (P, S, S)
    coords, labels = [], []
    for p in range(err.shape[0]):
        yx = err[p].nonzero()
        if len(yx) == 0:
            yx = (gt[p] > 0.5).nonzero()
        j = int(torch.randint(len(yx), (1,), generator=gen))
        y, x = int(yx[j, 0]), int(yx[j, 1])
        scale = TOY_SAM_IMAGE_SIZE / _LOSS_SIZE
        coords.append([(x + 0.5) * scale, (y + 0.5) * scale])
        labels.append(1 if gt[p, y, x] > 0.5 else 0)
    return torch.tensor(coords, dtype=torch.float32)[:, None], torch.tensor(labels)[:, None]


def _image_loss(sam: Sam, emb: torch.Tensor, pr: _Prompts, gen: torch.Generator) -> tuple[torch.Tensor, dict]:
    """Loss of one image's prompts and some statistics."""
    n = pr.points.shape[0]
    ones = torch.ones(n, 1, dtype=torch.int64)
    logits, iou_pred = _decode(sam, emb, (pr.points, ones), None, multimask=True)
    per_mask, iou = _mask_terms(logits, pr.point_gt)
    iou = torch.where(pr.is_object[:, None], iou, torch.zeros_like(iou))
    best = per_mask.argmin(1)
    obj = pr.is_object
    loss_mask = per_mask[obj].gather(1, best[obj, None]).sum() if obj.any() else per_mask.sum() * 0
    loss_iou = F.mse_loss(iou_pred, iou, reduction="sum") / 3
    count = int(obj.sum())
    stats = {"iou_best": float(iou[obj].max(1).values.sum()) if obj.any() else 0.0, "n_obj": count}
    # boxes: single-output token
    blog, biou_pred = _decode(sam, emb, None, pr.boxes, multimask=False)
    bm, biou = _mask_terms(blog, pr.box_gt)
    loss_mask = loss_mask + bm.sum()
    loss_iou = loss_iou + F.mse_loss(biou_pred, biou, reduction="sum")
    count += pr.boxes.shape[0]
    # corrective second click on object points (first click + click in the error region)
    if obj.any():
        first = logits[obj].gather(1, best[obj, None, None, None].expand(-1, 1, *logits.shape[-2:]))[:, 0]
        c2, l2 = _corrective_click(first, pr.point_gt[obj], gen)
        pts = torch.cat([pr.points[obj], c2], 1)
        labels = torch.cat([ones[obj], l2], 1)
        clog, ciou_pred = _decode(sam, emb, (pts, labels), None, multimask=False)
        cm, ciou = _mask_terms(clog, pr.point_gt[obj])
        loss_mask = loss_mask + cm.sum()
        loss_iou = loss_iou + F.mse_loss(ciou_pred, ciou, reduction="sum")
        count += int(obj.sum())
        stats["iou_2click"] = float(ciou.sum())
    return loss_mask + loss_iou, {**stats, "count": count}


def lr_at(step: int, cfg: SamTrainConfig) -> float:
    """Linear warm-up then cosine to 0, by step count."""
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    t = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    return cfg.lr * 0.5 * (1 + math.cos(math.pi * min(1.0, t)))


def train_sam(cfg: SamTrainConfig, out: str | Path | None = None, command: str = "") -> tuple[Sam, dict]:
    """Train the toy SAM from scratch.

    Args:
        cfg: settings; the result is a pure function of them (for a fixed torch build and thread count).
        out: folder for ``sam_toy.pth`` (fp32 state_dict) and ``sam_train.json``; None = do not write.
        command: the command line recorded in ``sam_train.json``.

    Returns:
        (model in eval mode, summary dict with steps, seconds, final training statistics).
    """
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    sam = build_sam_toy().train()
    resize = ResizeLongestSide(TOY_SAM_IMAGE_SIZE)
    decay = [p for n, p in sam.named_parameters() if p.ndim >= 2 and "pos" not in n]
    other = [p for n, p in sam.named_parameters() if not (p.ndim >= 2 and "pos" not in n)]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": other, "weight_decay": 0.0}],
        lr=cfg.lr,
    )
    gen = torch.Generator().manual_seed(cfg.seed)
    t0 = time.time()
    hist: list[dict] = []
    acc = {"loss": 0.0, "iou_best": 0.0, "n_obj": 0, "iou_2click": 0.0, "n": 0}
    for step in range(cfg.steps):
        for g in opt.param_groups:
            g["lr"] = lr_at(step, cfg)
        batch = [_sample_image(cfg, step, i, sam, resize) for i in range(cfg.images_per_step)]
        emb = sam.image_encoder(torch.cat([b[0] for b in batch]))
        total, count = emb.new_zeros(()), 0
        for i, (_, pr) in enumerate(batch):
            loss, st = _image_loss(sam, emb[i : i + 1], pr, gen)
            total = total + loss
            count += st["count"]
            acc["iou_best"] += st["iou_best"]
            acc["n_obj"] += st["n_obj"]
            acc["iou_2click"] += st.get("iou_2click", 0.0)
        total = total / count
        opt.zero_grad(set_to_none=True)
        total.backward()
        torch.nn.utils.clip_grad_norm_(sam.parameters(), cfg.grad_clip)
        opt.step()
        acc["loss"] += float(total.detach())
        acc["n"] += 1
        if (step + 1) % cfg.log_every == 0 or step + 1 == cfg.steps:
            rec = {
                "step": step + 1,
                "loss": acc["loss"] / acc["n"],
                "iou_1click": acc["iou_best"] / max(1, acc["n_obj"]),
                "iou_2click": acc["iou_2click"] / max(1, acc["n_obj"]),
                "lr": lr_at(step, cfg),
                "sec": round(time.time() - t0, 1),
            }
            hist.append(rec)
            log.info("sam %s", rec)
            acc = {k: 0 if isinstance(v, int) else 0.0 for k, v in acc.items()}
    sam.eval()
    summary = {"config": asdict(cfg), "train_seconds": round(time.time() - t0, 1), "history": hist}
    summary["command"] = command
    if out is not None:
        o = Path(out)
        sd = {k: v.detach().cpu() for k, v in sam.state_dict().items()}
        atomic_write_with(o / "sam_toy.pth", lambda f: torch.save(sd, f))
        atomic_write_json(o / "sam_train.json", summary)
    return sam, summary


def main() -> None:  # pragma: no cover - thin script entry, the CLI is `zsplg-fast toy train-sam`
    import argparse
    import faulthandler
    import signal
    import sys

    faulthandler.register(signal.SIGUSR1)  # `kill -USR1 <pid>` prints where a long run is

    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", required=True)
    ap.add_argument("--steps", type=int, default=SamTrainConfig.steps)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=SamTrainConfig.threads)
    a = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    _, summary = train_sam(
        SamTrainConfig(steps=a.steps, seed=a.seed, threads=a.threads),
        a.out,
        "python -m zsplg_fast.toy.train_sam " + " ".join(sys.argv[1:]),
    )
    print(json.dumps({k: v for k, v in summary.items() if k != "history"}))


if __name__ == "__main__":  # pragma: no cover
    main()
