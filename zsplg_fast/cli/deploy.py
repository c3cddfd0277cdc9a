"""`zsplg-fast deploy` (segmenter → edge folder with its measured mIoU cost) and `zsplg-fast infer`."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from zsplg_fast.cli.common import EXIT_SOME_FAILED, ConfigOpt, SetOpt, build_config, console


def deploy(
    checkpoint: str | None = typer.Option(None, "--checkpoint", help="segmenter .pth (from train)"),
    precision: str | None = typer.Option(None, "--precision", help="fp32 | fp16 | int8 (default int8)"),
    calib: str | None = typer.Option(None, "--calib", help="calibration dataset KIND:DIR (int8)"),
    calib_split: str | None = typer.Option(None, "--calib-split", help="split of --calib (default train)"),
    calib_images: int | None = typer.Option(None, "--calib-images", help="calibration images (default 64)"),
    val: str | None = typer.Option(None, "--val", help="labeled validation dataset KIND:DIR"),
    val_split: str | None = typer.Option(None, "--val-split", help="split of --val (default val)"),
    val_images: int | None = typer.Option(None, "--val-images", help="evaluate on the first N images"),
    int8_target: str | None = typer.Option(
        None, "--int8-target", help="tensorrt (default) | cpu: uint8 activations, fast on onnxruntime CPU"
    ),
    max_miou_drop: float | None = typer.Option(None, "--max-miou-drop", help="points allowed (default 1.0)"),
    latency_size: str | None = typer.Option(None, "--latency-size", help="S or HxW timed (default 512)"),
    threads: int | None = typer.Option(None, "--threads", help="onnxruntime / torch threads"),
    out: str | None = typer.Option(None, "--out", help="deploy folder, e.g. deploy/NAME"),
    force: bool = typer.Option(
        False, "--force", help="replace a folder made by deploy (never a folder of other files)"
    ),
    config: Path | None = ConfigOpt,
    set_: list[str] | None = SetOpt,
) -> None:
    """Export the segmenter to fp32 / fp16 / INT8, measure the mIoU it costs and its speed, write a folder.

    The folder holds model.onnx, model.json (sidecar) and README.md; an mIoU drop over --max-miou-drop
    is refused and leaves nothing behind.
    """
    from zsplg_fast.deploy import deploy as run

    cfg = build_config(
        config,
        set_,
        {
            "deploy.checkpoint": checkpoint,
            "deploy.precision": precision,
            "deploy.calib": calib,
            "deploy.calib_split": calib_split,
            "deploy.calib_images": calib_images,
            "deploy.val": val,
            "deploy.val_split": val_split,
            "deploy.val_images": val_images,
            "deploy.int8_target": int8_target,
            "deploy.max_miou_drop": max_miou_drop,
            "deploy.latency_size": latency_size,
            "deploy.threads": threads,
            "deploy.out": out,
            "deploy.force": force or None,
        },
    )
    with console.status("deploy") as status:
        result = run(cfg.deploy, progress=lambda stage: status.update(f"deploy: {stage}"))
    m, lat = result["miou"], result["latency"]
    table = Table(title=f"{result['out']} ({result['precision']})")
    for col in ("", "mIoU %", f"latency ms ({lat['input']}, onnxruntime)"):
        table.add_column(col, justify="right" if col else "left")
    table.add_row("fp32 reference", f"{100 * m['reference']:.2f}", f"{lat['fp32_ort_ms']:.1f}")
    table.add_row(
        f"deployed {result['precision']}", f"{100 * m['deployed']:.2f}", f"{lat['deployed_ort_ms']:.1f}"
    )
    console.print(table)
    console.print(
        f"mIoU drop {m['drop_points']:.2f} points (limit {m['limit_points']:.2f}); "
        f"speed-up {lat['speedup_vs_fp32_ort']:.2f}× vs fp32 onnxruntime; see {result['out']}/README.md"
    )


def infer(
    deploy_dir: Path = typer.Argument(..., help="a folder written by `zsplg-fast deploy`"),
    input_: Path = typer.Option(..., "--input", help="an image file or a folder of images"),
    out: Path = typer.Option(Path("preds"), "--out", help="output folder (labels/, overlays/, errors.jsonl)"),
    backend: str = typer.Option("ort", "--backend", help="ort | trt | torch"),
    overlays: bool = typer.Option(False, "--overlays", help="also write image + colour mask + legend PNGs"),
    threads: int | None = typer.Option(None, "--threads", help="onnxruntime intra-op threads"),
    force: bool = typer.Option(False, "--force", help="reuse an --out folder of a previous run"),
) -> None:
    """Predict palette PNG label maps (and overlays) for images with a deployed segmenter."""
    from zsplg_fast.deploy import infer as run

    with Progress(
        TextColumn("[bold]infer"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.description}"),
        console=console,
    ) as bar:
        task = bar.add_task("", total=None)

        def progress(done: int, total: int, sample_id: str) -> None:
            bar.update(task, completed=done, total=total, description=sample_id)

        report = run(
            deploy_dir, input_, out, backend, overlays, threads=threads, force=force, progress=progress
        )
    console.print(
        f"{report['written']} of {report['images']} images → {out}/labels"
        + (" (+ overlays/)" if overlays else "")
        + f", {report['images_per_s']} images/s on {report['backend']} ({report['device']})"
    )
    if report["failed"]:
        console.print(f"[yellow]{report['failed']} images skipped; see {out}/errors.jsonl")
        raise typer.Exit(EXIT_SOME_FAILED)


def register(app: typer.Typer) -> None:
    """Attach `deploy` and `infer` to the root app."""
    app.command("deploy")(deploy)
    app.command("infer")(infer)
