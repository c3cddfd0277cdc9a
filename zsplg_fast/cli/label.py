"""`zsplg-fast label`: zero-shot pseudo labels for a whole dataset."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from zsplg_fast.cli.common import EXIT_SOME_FAILED, ConfigOpt, SetOpt, build_config, console


def label(
    data: str = typer.Option(None, "--data", help="voc:DIR | coco:DIR | folder:DIR | synthetic:DIR"),
    split: str = typer.Option(None, "--split", help="split file or name (labeled, unlabeled, val, train)"),
    classes: str = typer.Option(
        None, "--classes", help="voc | coco | auto (the dataset's classes.txt) | FILE (one class per line)"
    ),
    sam: str = typer.Option(
        None, "--sam", help="vit_b | vit_l | vit_h | tiny | toy | sam2.1_hiera_t|s|b+|l (extra [sam2])"
    ),
    sam_checkpoint: str = typer.Option(None, "--sam-checkpoint", help="official SAM .pth / SAM 2 .pt"),
    clip: str = typer.Option(None, "--clip", help="open_clip model name, e.g. ViT-B-16 (or toy)"),
    clip_pretrained: str = typer.Option(None, "--clip-pretrained", help="open_clip tag or local file"),
    out: str = typer.Option(None, "--out", help="output folder"),
    shard: str = typer.Option(None, "--shard", help="i/N: label a disjoint share"),
    max_errors: int = typer.Option(None, "--max-errors", help="stop after this many failed images"),
    masks: str = typer.Option(None, "--masks", help="upstream | fast"),
    backend: str = typer.Option(None, "--backend", help="torch | ort | trt (fast masks)"),
    engines: str = typer.Option(None, "--engines", help="folder of exported artifacts"),
    precision: str = typer.Option(
        None,
        "--precision",
        help="auto (bf16 for torch on CUDA, else fp32) | fp32 | bf16 (torch: CUDA, or CPUs with "
        "AVX512-BF16/AMX) | fp16 | int8",
    ),
    compile_: str = typer.Option(
        None, "--compile", help="auto (torch on CUDA, jobs of >= 100 images) | on | off: torch.compile"
    ),
    device: str = typer.Option(None, "--device", help="auto | cpu | cuda | cuda:N"),
    devices: str = typer.Option(
        None,
        "--devices",
        help="one worker process per device, disjoint shards, one folder: all | cuda:0,cuda:1 | cpu:N | N",
    ),
    executor: str = typer.Option(None, "--executor", help="local | ray"),
    ray_address: str = typer.Option(None, "--ray-address"),
    workers: int = typer.Option(None, "--workers", help="ray labeling actors"),
    num_gpus_per_worker: str = typer.Option(
        None, "--num-gpus-per-worker", help="GPUs per ray actor: auto (1 if the cluster has GPUs) | N"
    ),
    ray_batch: int = typer.Option(None, "--ray-batch", help="images per ray labeling batch"),
    overlays: int = typer.Option(None, "--overlays", help="write a grid PNG of N samples"),
    config: Path | None = ConfigOpt,
    set_: list[str] | None = SetOpt,
) -> None:
    """Label a dataset zero-shot: SAM masks named by dense CLIP features. Resumes; never overwrites."""
    from zsplg_fast.labeling.job import JobAbortedError
    from zsplg_fast.labeling.run import label_dataset

    cfg = build_config(
        config,
        set_,
        {
            "data.source": data,
            "data.split": split,
            "classify.classes": classes,
            "sam.variant": sam,
            "sam.checkpoint": sam_checkpoint,
            "clip.model": clip,
            "clip.pretrained": clip_pretrained,
            "label.out": out,
            "label.shard": shard,
            "label.max_errors": max_errors,
            "label.masks": masks,
            "label.backend": backend,
            "label.engines": engines,
            "label.precision": precision,
            "label.compile": compile_,
            "label.device": device,
            "label.devices": devices,
            "label.executor": executor,
            "label.ray_address": ray_address,
            "label.workers": workers,
            "label.num_gpus_per_worker": _gpus(num_gpus_per_worker),
            "label.ray_batch": ray_batch,
            "label.overlays": overlays,
        },
    )
    with Progress(
        TextColumn("[bold]label"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.description}"),
        console=console,
        transient=False,
    ) as progress:
        task = progress.add_task("", total=None)

        def on_progress(done: int, total: int, sample_id: str) -> None:
            progress.update(task, completed=done, total=total, description=sample_id)

        try:
            summary = label_dataset(cfg, on_progress=on_progress)
        except JobAbortedError as e:  # the counts so far, then the one-line error (exit 1)
            if e.summary is not None:
                progress.stop()
                _print_summary(cfg.label.out, e.summary)
            raise
    _print_summary(cfg.label.out, summary)
    if summary.failed:
        console.print(f"[yellow]{summary.failed} images failed; see {summary.errors_path}")
    failed_workers = getattr(summary, "failed_workers", [])
    for w in failed_workers:
        console.print(f"[red]worker {w['worker']} ({w['device']}, shard {w['shard']}) failed: {w['error']}")
        console.print(w["message"], markup=False, highlight=False, soft_wrap=True)
        # soft_wrap: the command stays on one line, ready to copy
        console.print(f"  rerun its shard alone: {w['rerun']}", markup=False, highlight=False, soft_wrap=True)
    if failed_workers:
        raise typer.Exit(1)  # a worker stopped: the job did not complete
    if summary.failed:
        raise typer.Exit(EXIT_SOME_FAILED)


def _gpus(value: str | None) -> float | str | None:
    """``--num-gpus-per-worker``: ``auto`` as is, a number as a float (the config check names bad ones)."""
    try:
        return float(value) if value is not None and value != "auto" else value
    except ValueError:
        return value


def _print_summary(out: str, summary: Any) -> None:
    """The counts table of a label run (a ``JobSummary``)."""
    table = Table(title=f"labels → {out}")
    keys = ("total", "skipped", "labeled", "failed", "seconds")
    for k in keys:
        table.add_column(k)
    table.add_row(*(str(getattr(summary, k)) for k in keys))
    console.print(table)


def register(app: typer.Typer) -> None:
    """Attach `label` to the root app."""
    app.command("label")(label)
