"""`zsplg-fast toy train-sam | train-clip | train-backbone | eval`: the toy world's own models."""

from __future__ import annotations

import json
import logging
import shlex
import sys
from pathlib import Path

import typer

from zsplg_fast.cli.common import console

app = typer.Typer(
    help="Train and evaluate the toy world's tiny SAM, CLIP and segmenter backbone.", no_args_is_help=True
)

OutOpt = typer.Option(..., "--out", help="folder for the weights and the training record")
ThreadsOpt = typer.Option(
    1, "--threads", help="torch threads (results depend on it; the manifest records it)"
)


def _command() -> str:
    return "zsplg-fast " + " ".join(shlex.quote(a) for a in sys.argv[1:])


@app.command("train-sam")
def train_sam_cmd(
    out: Path = OutOpt,
    steps: int = typer.Option(1500, "--steps", min=1, help="the shipped weights: 1500"),
    seed: int = typer.Option(0, "--seed"),
    threads: int = ThreadsOpt,
) -> None:
    """Train the toy SAM from scratch (deterministic for a seed); writes sam_toy.pth + sam_train.json."""
    from zsplg_fast.toy.train_sam import SamTrainConfig, train_sam

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    _, summary = train_sam(SamTrainConfig(steps=steps, seed=seed, threads=threads), out, _command())
    console.print(f"toy SAM: {steps} steps in {summary['train_seconds']} s → {out}/sam_toy.pth")


@app.command("train-clip")
def train_clip_cmd(
    out: Path = OutOpt,
    steps: int = typer.Option(3000, "--steps", min=1, help="image-tower (phase 1) steps"),
    text_steps: int = typer.Option(600, "--text-steps", min=0, help="locked-image text-tower steps"),
    joint_steps: int = typer.Option(400, "--joint-steps", min=0, help="joint fine-tuning steps"),
    seed: int = typer.Option(0, "--seed"),
    threads: int = ThreadsOpt,
    eval_every: int = typer.Option(0, "--eval-every", help="log held-out GT-mask accuracy every N steps"),
) -> None:
    """Train the toy CLIP from scratch (deterministic for a seed); writes clip_toy.pt + clip_train.json."""
    from zsplg_fast.toy.train_clip import ClipTrainConfig, train_clip

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    eval_fn = None
    if eval_every:
        from zsplg_fast.toy.evaluate import clip_eval_fn

        eval_fn = clip_eval_fn()
    cfg = ClipTrainConfig(
        steps=steps, text_steps=text_steps, joint_steps=joint_steps, seed=seed, threads=threads
    )
    _, _, summary = train_clip(cfg, out, _command(), eval_fn, eval_every)
    console.print(f"toy CLIP: {steps} steps in {summary['train_seconds']} s → {out}/clip_toy.pt")


@app.command("train-backbone")
def train_backbone_cmd(
    out: Path = OutOpt,
    steps: int = typer.Option(1200, "--steps", min=1, help="the shipped weights: 1200 at --threads 2"),
    seed: int = typer.Option(0, "--seed"),
    threads: int = ThreadsOpt,
) -> None:
    """Pretrain the segmenter's tiny backbone on image-level shape labels (the toy world's ImageNet);
    writes backbone_toy.pth + backbone_train.json."""
    from zsplg_fast.toy.train_backbone import BackboneTrainConfig, train_backbone

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    cfg = BackboneTrainConfig(steps=steps, seed=seed, threads=threads)
    _, summary = train_backbone(cfg, out, _command())
    console.print(f"toy backbone: {steps} steps in {summary['train_seconds']} s → {out}/backbone_toy.pth")


@app.command("eval")
def eval_cmd(
    num: int = typer.Option(40, "--num", min=1, help="held-out images (toy world val split)"),
    sam_checkpoint: Path | None = typer.Option(None, "--sam-checkpoint", help="default: shipped weights"),
    clip_checkpoint: Path | None = typer.Option(None, "--clip-checkpoint", help="default: shipped weights"),
    json_out: Path | None = typer.Option(None, "--json", help="also write the figures as JSON here"),
) -> None:
    """Measure the toy models on held-out images: SAM clicks, AMG, CLIP on GT masks, pseudo-label mIoU."""
    from zsplg_fast.toy.report import evaluate_toy

    result = evaluate_toy(num, sam_checkpoint, clip_checkpoint)
    from rich.table import Table

    table = Table(title=f"toy models on {num} held-out images")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for k, v in result["metrics"].items():
        table.add_row(k, f"{v:.3f}" if isinstance(v, float) else str(v))
    console.print(table)
    if json_out is not None:
        from zsplg_fast.utils.io import atomic_write_json, refuse_overwrite

        refuse_overwrite(json_out)
        atomic_write_json(json_out, result)
    else:
        console.print(json.dumps(result["settings"]), markup=False, highlight=False)


def register(root: typer.Typer) -> None:
    """Attach this command group to the root app."""
    root.add_typer(app, name="toy")
