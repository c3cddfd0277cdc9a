"""Pretrain the segmenter's ``tiny`` backbone for the toy world: the world's stand-in for ImageNet.

DeepLabV3+ in UniMatch starts from an ImageNet-classification ResNet; from random weights the tiny
segmenter separates shapes from the background but barely tells them apart within a CPU budget. This
script gives it the same kind of start: object-centric, single-label *image* classification, as on
ImageNet ("which shape is this picture of?"), on one-object images rendered from a seed stream of its
own, so no image of the world's labeled, unlabeled or val splits (and no mask) is ever seen.

Recipe: ResNet backbone (``BACKBONES['tiny']``) → global average pool of ``c4`` → linear → cross-entropy
over the K shapes; SGD (momentum 0.9, wd 1e-4) with poly decay; inputs normalised as the segmenter
normalises them. Deterministic for a seed and a thread count. The weights are saved as a backbone
state_dict, loadable with ``train.model.pretrained`` (``toy`` = the shipped copy).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from zsplg_fast.data.synthetic import TOY_WORLD, render_sample
from zsplg_fast.models.segmenter import build_segmenter
from zsplg_fast.train import transforms as T
from zsplg_fast.train.common import poly_lr
from zsplg_fast.utils.io import atomic_write_json, atomic_write_with

log = logging.getLogger("zsplg_fast.toy")

STREAM = 7  # seed-stream code; the world's splits use other codes (see data.synthetic.SPLIT_CODES)
MEAN = torch.tensor(T.MEAN).view(1, 3, 1, 1)  # as the segmenter normalises its inputs
STD = torch.tensor(T.STD).view(1, 3, 1, 1)


@dataclass
class BackboneTrainConfig:
    """Settings of one pretraining run (all recorded in ``backbone_train.json``)."""

    steps: int = 1200
    seed: int = 0
    batch: int = 32
    image_size: int = 160
    lr: float = 0.05
    weight_decay: float = 1e-4
    poly_power: float = 0.9
    threads: int = 1
    log_every: int = 50


class ShapeClassifier(nn.Module):
    """Backbone + linear head. x: (B, 3, S, S) float32 normalised → logits (B, K)."""

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.backbone = build_segmenter("tiny", num_classes + 1).backbone
        self.head = nn.Linear(int(self.backbone.layer4[-1].bn3.num_features), num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c4 = self.backbone.base_forward(x)[-1]
        return self.head(F.adaptive_avg_pool2d(c4, 1).flatten(1))


def make_batch(seed: int, step: int, batch: int, size: int, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """One-object images (B, 3, S, S) float32 normalised and their shape (B,) int64 in [0, K)."""
    imgs, targets = [], []
    for j in range(batch):
        s = render_sample(np.random.default_rng([seed, STREAM, step, j]), (size, size), k, max_objects=1)
        imgs.append(torch.from_numpy(s.image))
        targets.append(int(s.label.max()) - 1)
    x = torch.stack(imgs).permute(0, 3, 1, 2).float() / 255.0
    return (x - MEAN) / STD, torch.tensor(targets, dtype=torch.int64)


@torch.no_grad()
def held_out_accuracy(model: ShapeClassifier, seed: int, k: int, size: int, n: int = 128) -> float:
    """Top-1 accuracy on ``n`` images from a step index training never reaches."""
    model.eval()
    x, t = make_batch(seed, 10**9, n, size, k)
    acc = float((model(x).argmax(1) == t).float().mean())
    model.train()
    return acc


def train_backbone(
    cfg: BackboneTrainConfig, out: str | Path | None = None, command: str = ""
) -> tuple[nn.Module, dict[str, Any]]:
    """Pretrain; returns (backbone, summary). With ``out``, writes ``backbone_toy.pth`` (fp32 backbone
    state_dict) and ``backbone_train.json`` (config, command, history, seconds) atomically."""
    torch.manual_seed(cfg.seed)
    torch.set_num_threads(cfg.threads)
    k = TOY_WORLD.num_classes
    model = ShapeClassifier(k).train()
    opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=0.9, weight_decay=cfg.weight_decay)
    history: list[dict[str, Any]] = []
    t0 = time.perf_counter()
    for step in range(cfg.steps):
        lr = poly_lr(cfg.lr, step, cfg.steps, cfg.poly_power)
        for g in opt.param_groups:
            g["lr"] = lr
        x, t = make_batch(cfg.seed, step, cfg.batch, cfg.image_size, k)
        loss = F.cross_entropy(model(x), t)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if (step + 1) % cfg.log_every == 0 or step + 1 == cfg.steps:
            rec = {"step": step + 1, "loss": round(loss.item(), 4), "lr": lr}
            rec["sec"] = round(time.perf_counter() - t0, 1)
            if (step + 1) % (cfg.log_every * 5) == 0 or step + 1 == cfg.steps:
                rec["held_out_top1"] = round(held_out_accuracy(model, cfg.seed, k, cfg.image_size), 4)
            history.append(rec)
            log.info("backbone %s", rec)
    summary = {
        "config": asdict(cfg),
        "command": command,
        "train_seconds": round(time.perf_counter() - t0, 1),
        "history": history,
    }
    backbone = model.backbone.eval()
    if out is not None:
        o = Path(out)
        o.mkdir(parents=True, exist_ok=True)
        sd = {k_: v.detach().clone() for k_, v in backbone.state_dict().items()}
        atomic_write_with(o / "backbone_toy.pth", lambda f: torch.save(sd, f))
        atomic_write_json(o / "backbone_train.json", summary)
    return backbone, summary


def main() -> None:  # pragma: no cover - thin script entry, the CLI is `zsplg-fast toy train-backbone`
    import argparse
    import shlex
    import sys

    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--steps", type=int, default=BackboneTrainConfig.steps)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    command = "python -m zsplg_fast.toy.train_backbone " + " ".join(shlex.quote(x) for x in sys.argv[1:])
    _, summary = train_backbone(
        BackboneTrainConfig(steps=a.steps, seed=a.seed, threads=a.threads), a.out, command
    )
    print(json.dumps({k: v for k, v in summary.items() if k != "history"}))


if __name__ == "__main__":  # pragma: no cover
    main()
