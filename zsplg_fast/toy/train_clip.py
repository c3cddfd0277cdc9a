"""Train the toy CLIP contrastively on the shapes world: whole images, crops, and their regions.

Contrastive loss as in CLIP (Radford et al. 2021), read not copied, with changes the world needs:
- captions repeat within a batch ("a photo of a star." for many images), so targets are soft: every
  text that is *true* of an image or region (same shape, and same colour if it names one) is a positive,
  rows normalised to sum to 1, instead of the identity matrix;
- besides the batch's own captions, every step encodes one caption per possible claim (background,
  each shape, each shape × colour, random template), so the text tower gets a gradient for every class
  word every step;
- two kinds of image embedding are contrasted with the captions: the image's (avg-pooled patch tokens,
  open_clip ``pool_type='avg'``), and each *region's*: the L2-normalised patch tokens (exactly the
  dense features ``DenseClip(gem_depth=0)`` gives) pooled inside the region's mask (objects and
  background, from the generator's masks), exactly as masks are named at label time.
Training is LiT-style in three phases (see ``train_clip``): image tower against learned claim
embeddings, then the text tower against the locked image tower, then both at a low LR. The logit
scale starts at 30; each phase's LR schedule (warm-up + cosine) is driven by step count.
Deterministic for a seed and thread count.
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
from torch import nn

from zsplg_fast.data.shapes import OBJECT_COLOURS
from zsplg_fast.data.synthetic import WORLD_CLASSES
from zsplg_fast.labeling.classify import clip_preprocess
from zsplg_fast.labeling.pooling import pool_masks
from zsplg_fast.toy.clip import ToyTokenizer, build_clip_toy
from zsplg_fast.toy.clip_data import Fact, ScenePool, caption_for, caption_true, claim_of
from zsplg_fast.utils.io import atomic_write_json, atomic_write_with

log = logging.getLogger(__name__)


@dataclass
class ClipTrainConfig:
    """Toy-CLIP training settings."""

    steps: int = 3000
    seed: int = 0
    batch: int = 12
    num_classes: int = 6
    pool_size: int = 384
    refresh: int = 4
    p_crop: float = 0.5
    p_colour: float = 0.4
    global_weight: float = 0.5
    text_steps: int = 600
    joint_steps: int = 400
    lr: float = 1e-3
    text_lr: float = 1e-3
    joint_lr: float = 1e-4
    warmup: int = 150
    grad_clip: float = 1.0
    init_logit_scale: float = 30.0
    threads: int = 1
    log_every: int = 25


def all_claims(num_classes: int) -> list[Fact]:
    """Every claim a caption can make: background, each shape, each (shape, colour)."""
    shapes = WORLD_CLASSES[1 : num_classes + 1]
    return [
        ("background", None),
        *[(s, None) for s in shapes],
        *[(s, c) for s in shapes for c in OBJECT_COLOURS],
    ]


def targets(facts: list[list[Fact]], texts: list[Fact]) -> torch.Tensor:
    """(N, T) float: [i, j] = 1 if text claim j is true of item i (an image or a region)."""
    return torch.tensor([[float(caption_true(c, f)) for c in texts] for f in facts])


def contrastive_loss(
    emb: torch.Tensor, txt: torch.Tensor, scale: torch.Tensor, tgt: torch.Tensor, own: slice | None
) -> torch.Tensor:
    """CLIP loss with soft targets.

    emb: (N, D) image or region embeddings; txt: (T, D); tgt: (N, T) 0/1 truth; ``own``: the N columns
    holding each item's own caption (so tgt[i, own][i] = 1). Item→text runs over all T texts,
    text→item over the items' own captions (skipped when ``own`` is None: then it is a cosine
    classifier over the T texts with multi-positive targets).
    """
    logits = scale * F.normalize(emb, dim=-1) @ F.normalize(txt, dim=-1).T  # (N, T)
    i2t = -(tgt / tgt.sum(1, keepdim=True) * logits.log_softmax(1)).sum(1).mean()
    if own is None:
        return i2t
    sq, tsq = logits[:, own].T, tgt[:, own].T
    t2i = -(tsq / tsq.sum(1, keepdim=True) * sq.log_softmax(1)).sum(1).mean()
    return (i2t + t2i) / 2


def image_features(visual: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Avg-pooled image embedding (B, D) and dense features (B, D, h, w), unit norm along D.

    The dense map equals ``DenseClip(visual, gem_depth=0)(x)``: ln_post'ed patch tokens @ proj.
    """
    h = visual.transformer(visual._embeds(x))
    pooled, tokens = visual._pool(h)
    pooled, tokens = pooled @ visual.proj, tokens @ visual.proj
    b, n, d = tokens.shape
    g = math.isqrt(n)
    dense = F.normalize(tokens, dim=-1).transpose(1, 2).reshape(b, d, g, g)
    return pooled, dense


def lr_at(step: int, steps: int, warmup: int) -> float:
    """Linear warm-up then cosine to 0, by step count (fraction of the base LR)."""
    if step < warmup:
        return (step + 1) / warmup
    t = (step - warmup) / max(1, steps - warmup)
    return 0.5 * (1 + math.cos(math.pi * min(1.0, t)))


@dataclass
class _Batch:
    regions: torch.Tensor  # (R, D) mask-pooled unit dense features
    pooled: torch.Tensor  # (B, D) avg-pooled image embeddings
    region_facts: list[list[Fact]]
    image_facts: list[list[Fact]]


def _batch(model: nn.Module, pool: ScenePool, rng: np.random.Generator, cfg: ClipTrainConfig) -> _Batch:
    size = int(model.visual.image_size[0])
    pre = model.visual.preprocess_cfg
    scenes = pool.scenes(rng, cfg.batch, cfg.p_crop)
    x = torch.cat([clip_preprocess(sc.image, size, pre["mean"], pre["std"]) for sc in scenes])
    pooled, dense = image_features(model.visual, x)
    regions = torch.cat([pool_masks(torch.from_numpy(sc.regions), dense[i]) for i, sc in enumerate(scenes)])
    return _Batch(
        regions, pooled, [[f] for sc in scenes for f in sc.facts], [sc.image_facts for sc in scenes]
    )


def _phase_loss(
    phase: str,
    model: nn.Module,
    tok: ToyTokenizer,
    table: torch.Tensor,
    bt: _Batch,
    claims: list[Fact],
    rng: np.random.Generator,
    cfg: ClipTrainConfig,
) -> tuple[torch.Tensor, float]:
    """Loss of one step and the fraction of regions whose best-matching claim is true."""
    scale = model.logit_scale.exp().clamp(max=100)
    if phase == "image":  # the claim table stands in for the text tower (supervised pretraining)
        texts, txt, own_r, own_b = claims, table, None, None
    else:
        rc = [claim_of(rng, f[0], cfg.p_colour) for f in bt.region_facts]
        ic = [claim_of(rng, f[int(rng.integers(len(f)))], cfg.p_colour) for f in bt.image_facts]
        texts = rc + ic + claims
        txt = model.encode_text(tok([caption_for(rng, c) for c in texts]))
        own_r, own_b = slice(0, len(rc)), slice(len(rc), len(rc) + len(ic))
    tgt_r = targets(bt.region_facts, texts)
    loss = contrastive_loss(bt.regions, txt, scale, tgt_r, own_r)
    loss = loss + cfg.global_weight * contrastive_loss(
        bt.pooled, txt, scale, targets(bt.image_facts, texts), own_b
    )
    with torch.no_grad():
        m = len(claims)
        pred = (F.normalize(bt.regions, dim=-1) @ F.normalize(txt[-m:], dim=-1).T).argmax(1)
        hit = float(tgt_r[torch.arange(len(tgt_r)), len(texts) - m + pred].mean())
    return loss, hit


def _phase_params(model: nn.Module, table: nn.Parameter, phase: str) -> list[dict]:
    """AdamW groups of a phase: weight decay on matrices only; ``image`` also trains the claim table."""
    if phase == "image":
        named = [(n, p) for n, p in model.named_parameters() if n.startswith("visual.") or n == "logit_scale"]
        named.append(("claim_table", table))
    elif phase == "text":
        named = [(n, p) for n, p in model.named_parameters() if not n.startswith("visual.")]
    else:
        named = list(model.named_parameters())

    def decays(n: str, p: torch.Tensor) -> bool:
        return p.ndim >= 2 and "embedding" not in n and n != "claim_table"

    return [
        {"params": [p for n, p in named if decays(n, p)], "weight_decay": 0.05},
        {"params": [p for n, p in named if not decays(n, p)], "weight_decay": 0.0},
    ]


PHASES = ("image", "text", "joint")


def train_clip(
    cfg: ClipTrainConfig,
    out: str | Path | None = None,
    command: str = "",
    eval_fn: object = None,
    eval_every: int = 0,
) -> tuple[nn.Module, ToyTokenizer, dict]:
    """Train the toy CLIP from scratch in three phases (LiT-style, Zhai et al. 2022, read not copied).

    1. ``image`` (``cfg.steps``): the image tower learns against a table of learned claim embeddings
       (a stand-in for the text side, like LiT's supervised image pretraining);
    2. ``text`` (``cfg.text_steps``): the image tower is locked; the text tower learns contrastively to
       match captions (templates × shape/colour words) to the images and regions;
    3. ``joint`` (``cfg.joint_steps``): both towers fine-tune contrastively at a low LR.

    Args:
        cfg: settings; the result is a pure function of them (fixed torch build and thread count).
        out: folder for ``clip_toy.pt`` (fp32 open_clip state_dict) and ``clip_train.json``; None = no files.
        command: command line recorded in ``clip_train.json``.
        eval_fn: optional callable(model, tokenizer) -> dict, run every ``eval_every`` steps of the
            text and joint phases (logged).

    Returns:
        (model in eval mode, tokenizer, summary dict).
    """
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    model, tok = build_clip_toy(cfg.init_logit_scale)
    claims = all_claims(cfg.num_classes)
    table = nn.Parameter(F.normalize(torch.randn(len(claims), model.text_projection.shape[1]), dim=-1))
    pool = ScenePool(cfg.seed, cfg.num_classes, cfg.pool_size)
    t0 = time.time()
    hist: list[dict] = []
    plan = {
        "image": (cfg.steps, cfg.lr),
        "text": (cfg.text_steps, cfg.text_lr),
        "joint": (cfg.joint_steps, cfg.joint_lr),
    }
    for pi, phase in enumerate(PHASES):
        steps, base_lr = plan[phase]
        model.train()
        if phase == "text":
            model.visual.eval()
        params = _phase_params(model, table, phase)
        opt = torch.optim.AdamW(params, lr=base_lr, betas=(0.9, 0.98), eps=1e-6)
        warmup = cfg.warmup if phase == "image" else max(1, cfg.warmup // 3)
        acc: dict[str, float] = {"loss": 0.0, "region_hit": 0.0, "n": 0}
        for step in range(steps):
            for g in opt.param_groups:
                g["lr"] = base_lr * lr_at(step, steps, warmup)
            rng = np.random.default_rng([cfg.seed, 53, pi, step])
            pool.refresh(cfg.refresh)
            with torch.set_grad_enabled(phase != "text"):
                bt = _batch(model, pool, rng, cfg)
            loss, hit = _phase_loss(phase, model, tok, table, bt, claims, rng, cfg)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_([p for g in params for p in g["params"]], cfg.grad_clip)
            opt.step()
            acc["loss"] += float(loss.detach())
            acc["region_hit"] += hit
            acc["n"] += 1
            if (step + 1) % cfg.log_every == 0 or step + 1 == steps:
                rec = {
                    "phase": phase,
                    "step": step + 1,
                    "loss": round(acc["loss"] / acc["n"], 4),
                    "region_hit": round(acc["region_hit"] / acc["n"], 3),
                    "scale": round(float(model.logit_scale.detach().exp()), 2),
                    "sec": round(time.time() - t0, 1),
                }
                due = eval_every and ((step + 1) % eval_every == 0 or step + 1 == steps)
                if eval_fn is not None and phase != "image" and due:
                    model.eval()
                    rec.update(eval_fn(model, tok))  # type: ignore[operator]
                    model.train()
                hist.append(rec)
                log.info("clip %s", rec)
                acc = {"loss": 0.0, "region_hit": 0.0, "n": 0}
    model.eval()
    summary = {"config": asdict(cfg), "train_seconds": round(time.time() - t0, 1), "history": hist}
    summary["command"] = command
    if out is not None:
        o = Path(out)
        sd = {k: v.detach().cpu() for k, v in model.state_dict().items()}
        atomic_write_with(o / "clip_toy.pt", lambda fh: torch.save(sd, fh))
        atomic_write_json(o / "clip_train.json", summary)
    return model, tok, summary


def main() -> None:  # pragma: no cover - thin script entry; the CLI is `zsplg-fast toy train-clip`
    import argparse
    import faulthandler
    import signal
    import sys

    faulthandler.register(signal.SIGUSR1)
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", required=True)
    ap.add_argument("--steps", type=int, default=ClipTrainConfig.steps)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=ClipTrainConfig.threads)
    ap.add_argument("--text-steps", type=int, default=ClipTrainConfig.text_steps)
    ap.add_argument("--joint-steps", type=int, default=ClipTrainConfig.joint_steps)
    ap.add_argument("--eval-every", type=int, default=0)
    a = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    eval_fn = None
    if a.eval_every:
        from zsplg_fast.toy.evaluate import clip_eval_fn

        eval_fn = clip_eval_fn()
    cfg = ClipTrainConfig(
        steps=a.steps, text_steps=a.text_steps, joint_steps=a.joint_steps, seed=a.seed, threads=a.threads
    )
    _, _, summary = train_clip(
        cfg, a.out, "python -m zsplg_fast.toy.train_clip " + " ".join(sys.argv[1:]), eval_fn, a.eval_every
    )
    print(json.dumps({k: v for k, v in summary.items() if k != "history"}))


if __name__ == "__main__":  # pragma: no cover
    main()
