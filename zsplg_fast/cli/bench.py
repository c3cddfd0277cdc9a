"""`zsplg-fast bench` (components × backends latency matrix) and `zsplg-fast bench labeling`."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from zsplg_fast.cli.common import ConfigOpt, SetOpt, build_config, console

bench_app = typer.Typer(
    help="Latency of each component on each backend (JSON + markdown + PNG); `bench labeling`: end to end.",
    no_args_is_help=False,
    invoke_without_command=True,
)


def _ints(values: list[str] | None) -> list[int] | None:
    """``--x 16,64`` → [16, 64]; None when not given."""
    items = _split(values)
    if not items:
        return None
    if not all(v.isdigit() for v in items):
        raise typer.BadParameter(f"expected integers, got {items}")
    return [int(v) for v in items]


def _split(values: list[str] | None) -> list[str] | None:
    """``--x a,b --x c`` → [a, b, c]; None when not given."""
    if not values:
        return None
    return [v.strip() for item in values for v in item.split(",") if v.strip()]


@bench_app.callback()
def bench(
    ctx: typer.Context,
    components: list[str] | None = typer.Option(
        None,
        "--components",
        help="sam_encoder, sam_decoder_batched, clip_dense, clip_text, segmenter, "
        "labeling, segmenter_image (comma-separated or repeated; default all)",
    ),
    backends: list[str] | None = typer.Option(
        None,
        "--backends",
        help="torch, torch_compile, torch_fp16, torch_bf16, ort_cpu, ort_cuda, ort_trt, "
        "trt_fp32, trt_fp16, trt_int8 (+ ort_int8); default all but ort_int8",
    ),
    sam: str | None = typer.Option(None, "--sam", help="vit_b | vit_l | vit_h | tiny (random weights)"),
    sam_checkpoint: str | None = typer.Option(None, "--sam-checkpoint", help="SAM .pth (else random)"),
    clip: str | None = typer.Option(None, "--clip", help="open_clip model name, e.g. ViT-B-16"),
    clip_pretrained: str | None = typer.Option(None, "--clip-pretrained", help="local CLIP weights"),
    segmenter: str | None = typer.Option(None, "--segmenter", help="resnet101 | resnet50 | tiny (random)"),
    segmenter_checkpoint: str | None = typer.Option(None, "--segmenter-checkpoint", help="segmenter .pth"),
    segmenter_sizes: list[str] | None = typer.Option(
        None, "--segmenter-sizes", help="S or HxW, e.g. 512,480x640"
    ),
    decoder_batches: list[str] | None = typer.Option(None, "--decoder-batches", help="e.g. 16,64,256"),
    clip_sizes: list[str] | None = typer.Option(None, "--clip-sizes", help="e.g. 224,448"),
    skip: list[str] | None = typer.Option(
        None, "--skip", help="cells not to run: component:backend ('*' = any)"
    ),
    image: str | None = typer.Option(None, "--image", help="image for labeling / segmenter_image"),
    grid: int | None = typer.Option(None, "--grid", help="AMG points per side for the labeling case"),
    budget_s: float | None = typer.Option(None, "--budget-s", help="timed seconds per cell"),
    warmup: int | None = typer.Option(None, "--warmup", help="untimed runs per cell"),
    max_iters: int | None = typer.Option(None, "--max-iters", help="timed runs cap per cell"),
    threads: int | None = typer.Option(None, "--threads", help="torch / onnxruntime intra-op threads"),
    device: str | None = typer.Option(None, "--device", help="auto | cpu | cuda[:N] (torch columns)"),
    exporter: str | None = typer.Option(None, "--exporter", help="dynamo | legacy (default: per spec)"),
    artifacts: str | None = typer.Option(None, "--artifacts", help="ONNX / plan cache folder"),
    out: str | None = typer.Option(None, "--out", help="results folder, e.g. bench/results/NAME"),
    force: bool = typer.Option(
        False, "--force", help="replace a results folder made by bench (never others)"
    ),
    config: Path | None = ConfigOpt,
    set_: list[str] | None = SetOpt,
) -> None:
    """Time components × backends; unavailable backends are listed with their reason."""
    if ctx.invoked_subcommand is not None:
        return
    from zsplg_fast.bench.matrix import run_bench
    from zsplg_fast.bench.report import matrix_rows, rich_table

    cfg = build_config(
        config,
        set_,
        {
            "sam.variant": sam,
            "sam.checkpoint": sam_checkpoint,
            "clip.model": clip,
            "clip.pretrained": clip_pretrained,
            "bench.components": _split(components),
            "bench.backends": _split(backends),
            "bench.segmenter_backbone": segmenter,
            "bench.segmenter_checkpoint": segmenter_checkpoint,
            "bench.segmenter_sizes": _split(segmenter_sizes),
            "bench.decoder_batches": _ints(decoder_batches),
            "bench.clip_sizes": _ints(clip_sizes),
            "bench.skip": _split(skip),
            "bench.image": image,
            "bench.grid": grid,
            "bench.budget_s": budget_s,
            "bench.warmup": warmup,
            "bench.max_iters": max_iters,
            "bench.threads": threads,
            "bench.device": device,
            "bench.exporter": exporter,
            "bench.artifacts": artifacts,
            "bench.out": out,
            "bench.force": force or None,
        },
    )
    with Progress(
        TextColumn("[bold]bench"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.description}"),
        console=console,
    ) as bar:
        task = bar.add_task("", total=None)
        done = {"n": 0}

        def progress(case: str, backend: str, status: str) -> None:
            if status == "start":
                bar.update(task, description=f"{case} on {backend}")
            else:
                done["n"] += 1
                bar.update(task, completed=done["n"])

        report = run_bench(cfg, progress=progress)
    console.print(rich_table(report))
    for note in matrix_rows(report)[2]:
        console.print(note, markup=False, highlight=False, soft_wrap=True)
    console.print(f"wrote {cfg.bench.out}/bench.json, bench.md, bench.png")


@bench_app.command("labeling")
def labeling(
    grids: list[str] | None = typer.Option(None, "--grids", help="AMG points per side, e.g. 16,32"),
    images: int | None = typer.Option(None, "--images", help="images per grid"),
    image_size: str | None = typer.Option(None, "--image-size", help="HxW of the synthetic images"),
    precision: str | None = typer.Option(None, "--precision", help="fp32 | int8 (adds variant D)"),
    sam: str | None = typer.Option(
        None, "--sam", help="SAM variant (random weights), e.g. vit_b or sam2.1_hiera_b+ (A = SAM2AMG)"
    ),
    clip: str | None = typer.Option(None, "--clip", help="open_clip model name"),
    clip_size: int | None = typer.Option(None, "--clip-size", help="dense CLIP input size"),
    variants: list[str] | None = typer.Option(None, "--variants", help="A,B,C (A = upstream reference)"),
    threads: int | None = typer.Option(None, "--threads", help="torch / onnxruntime threads"),
    export_dir: str | None = typer.Option(None, "--export-dir", help="keep exported artifacts here"),
    decoder_attention: str | None = typer.Option(
        None, "--decoder-attention", help="C/D's exported decoder: folded (default, onnxruntime CPU) | fused"
    ),
    out: str | None = typer.Option(None, "--out", help="results stem: <out>.json and <out>.md"),
    note: str | None = typer.Option(None, "--note", help="free text recorded in the report"),
) -> None:
    """End-to-end labeling: upstream (A) vs ours on torch (B), onnxruntime (C), ORT INT8 (D)."""
    from zsplg_fast.bench.labeling import LabelBenchConfig, bench_labeling
    from zsplg_fast.config.bench import parse_size

    given: dict[str, Any] = {
        "grids": tuple(int(g) for g in _split(grids)) if grids else None,
        "images": images,
        "image_hw": parse_size(image_size, "--image-size") if image_size else None,
        "precision": precision,
        "sam_variant": sam,
        "clip_model": clip,
        "clip_size": clip_size,
        "variants": tuple(_split(variants)) if variants else None,
        "threads": threads,
        "export_dir": export_dir,
        "decoder_attention": decoder_attention,
        "out": out,
        "note": note,
    }
    known = {f.name for f in dataclasses.fields(LabelBenchConfig)}
    cfg = LabelBenchConfig(**{k: v for k, v in given.items() if v is not None and k in known})
    bench_labeling(cfg, log=lambda line: console.print(line, highlight=False))


@bench_app.command("deploy")
def deploy_bench(
    backbones: list[str] | None = typer.Option(
        None, "--backbones", help="segmenter backbones, e.g. resnet101,mobilenet_v3_large (random weights)"
    ),
    variants: list[str] | None = typer.Option(
        None, "--variants", help="fp32,fp16,int8,int8-cpu (default all; fp32 always runs)"
    ),
    size: int | None = typer.Option(None, "--size", help="square input side (default 513)"),
    calib_images: int | None = typer.Option(None, "--calib-images", help="int8 calibration images"),
    rounds: int | None = typer.Option(None, "--rounds", help="interleaved timing rounds (default 2)"),
    budget_s: float | None = typer.Option(None, "--budget-s", help="timed seconds per variant and round"),
    threads: int | None = typer.Option(None, "--threads", help="onnxruntime intra-op threads"),
    work: str | None = typer.Option(None, "--work", help="folder for the ONNX files"),
    out: str | None = typer.Option(None, "--out", help="results folder (bench_deploy.json / .md)"),
    note: str | None = typer.Option(None, "--note", help="free text recorded in the report"),
) -> None:
    """Real-size DeepLabV3+ (random weights) at fp32 / fp16 / int8 side by side on onnxruntime CPU:
    latency, throughput and peak RSS, each variant in a fresh process without torch."""
    from zsplg_fast.bench.deploy_speed import VARIANTS, DeployBenchConfig, bench_deploy
    from zsplg_fast.models.segmenter import BACKBONES

    names = _split(backbones)
    for b in names or []:
        if b not in BACKBONES:
            raise typer.BadParameter(f"unknown backbone {b!r}; valid: {', '.join(BACKBONES)}")
    chosen = _split(variants)
    for v in chosen or []:
        if v not in VARIANTS:
            raise typer.BadParameter(f"unknown variant {v!r}; valid: {', '.join(VARIANTS)}")
    given: dict[str, Any] = {
        "backbones": tuple(names) if names else None,
        "variants": tuple(dict.fromkeys(["fp32", *chosen])) if chosen else None,
        "size": size,
        "calib_images": calib_images,
        "rounds": rounds,
        "budget_s": budget_s,
        "threads": threads,
        "work": work,
        "out": out,
        "note": note,
    }
    cfg = DeployBenchConfig(**{k: v for k, v in given.items() if v is not None})
    report = bench_deploy(cfg, log=lambda line: console.print(line, highlight=False))
    from zsplg_fast.bench.deploy_speed import markdown

    console.print(markdown(report), markup=False, highlight=False, soft_wrap=True)
    console.print(f"wrote {cfg.out}/bench_deploy.json and bench_deploy.md")


def register(app: typer.Typer) -> None:
    """Attach `bench` (and `bench labeling`) to the root app."""
    app.add_typer(bench_app, name="bench")
