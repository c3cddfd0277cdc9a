"""`zsplg-fast unimatch | enhance | train | evaluate`: options → config → one library call each.

Run any of them under torchrun for DDP, e.g.
``torchrun --nproc_per_node 4 -m zsplg_fast.cli.main unimatch --config pascal --data voc:DIR --out runs/u``.
"""

from __future__ import annotations

import difflib
import logging
import os
from importlib import resources
from pathlib import Path
from typing import Any

import typer
from rich.logging import RichHandler
from rich.markup import escape
from rich.table import Table

from zsplg_fast.cli.common import SetOpt, build_config, console
from zsplg_fast.config import Config
from zsplg_fast.errors import ConfigError

PresetOpt = typer.Option(None, "--config", "-c", help="YAML config, or a preset name: pascal | coco | tiny")
DataOpt = typer.Option(None, "--data", help="voc:DIR | synthetic:DIR | coco:DIR (train.data.source)")
ResumeOpt = typer.Option(False, "--resume", help="continue the run in --out exactly where it stopped")
BackboneOpt = typer.Option(None, "--backbone", help="resnet50 | resnet101 | tiny")


def preset(config: str | None) -> Path | None:
    """A config path; bare names resolve to the packaged presets (zsplg_fast/configs/<name>.yaml).

    Raises:
        ConfigError: neither a file nor a preset; the presets are listed, with the closest one
            (``pascl`` → ``pascal``) as a did-you-mean, as for config keys.
    """
    if config is None or Path(config).is_file():
        return Path(config) if config else None
    packaged = resources.files("zsplg_fast") / "configs"
    if (packaged / f"{config}.yaml").is_file():
        return Path(str(packaged / f"{config}.yaml"))
    names = sorted(e.name.removesuffix(".yaml") for e in packaged.iterdir() if e.name.endswith(".yaml"))
    stem = Path(config).name.removesuffix(".yaml").removesuffix(".yml")
    close = difflib.get_close_matches(stem, names, n=1, cutoff=0.6)
    raise ConfigError(
        "--config",
        config,
        "no such file or preset",
        f"a YAML path, or a preset: {', '.join(names)}",
        suggestion=close[0] if close else None,
    )


def _logging() -> None:
    """INFO progress lines from rank 0 only (other torchrun ranks keep warnings)."""
    level = logging.INFO if os.environ.get("RANK", "0") == "0" else logging.WARNING
    log = logging.getLogger("zsplg_fast")
    if not log.handlers:
        log.addHandler(RichHandler(console=console, show_path=False, markup=False))
    log.setLevel(level)


def _cfg(config: str | None, sets: list[str] | None, options: dict[str, Any]) -> Config:
    _logging()
    return build_config(preset(config), sets, options)


def _warn(report: dict[str, Any]) -> None:
    """The report's warnings (also in its JSON), one yellow line each."""
    for w in report.get("warnings", []):
        console.print(f"[yellow]warning:[/] {escape(w)}", highlight=False, soft_wrap=True)


def _summary(title: str, result: dict[str, Any], keys: tuple[str, ...]) -> None:
    table = Table(title=title, show_header=False)
    for k in keys:
        v = result.get(k)
        table.add_row(k, f"{100 * v:.2f} %" if k.startswith("miou") and v is not None else str(v))
    console.print(table)


_STAGE_KEYS = ("out", "complete", "iterations", "total_iters", "miou", "best_miou", "checkpoint", "seconds")


def unimatch(
    out: str = typer.Option(..., "--out", help="run folder (latest.pth, best.pth, final.pth, metrics.json)"),
    data: str = DataOpt,
    zero_shot: str = typer.Option(None, "--zero-shot", help="zero-shot label folder (a label job's out)"),
    fusion: str = typer.Option(None, "--fusion", help="online | two_stage | none"),
    backbone: str = BackboneOpt,
    pretrained: str = typer.Option(None, "--pretrained", help="local backbone .pth"),
    resume: bool = ResumeOpt,
    config: str | None = PresetOpt,
    set_: list[str] | None = SetOpt,
) -> None:
    """Train UniMatch on labeled + unlabeled images, optionally fused with zero-shot labels."""
    from zsplg_fast.train.unimatch import train_unimatch

    cfg = _cfg(
        config,
        set_,
        {
            "train.data.source": data,
            "train.data.zero_shot": zero_shot,
            "train.unimatch.fusion": fusion,
            "train.model.backbone": backbone,
            "train.model.pretrained": pretrained,
        },
    )
    _summary("unimatch", train_unimatch(cfg.train, out, resume=resume), _STAGE_KEYS)


def enhance(
    checkpoint: str = typer.Option(..., "--checkpoint", help="UniMatch final.pth"),
    out: str = typer.Option(..., "--out", help="folder for labels/<id>.png, manifest.json, report.json"),
    data: str = DataOpt,
    zero_shot: str = typer.Option(None, "--zero-shot", help="zero-shot label folder"),
    threshold: float = typer.Option(None, "--threshold", help="confidence threshold (default τ)"),
    fallback: str = typer.Option(None, "--fallback", help="zero_shot | prediction | ignore"),
    scope: str = typer.Option(None, "--scope", help="all | background (only add to zero-shot background)"),
    config: str | None = PresetOpt,
    set_: list[str] | None = SetOpt,
) -> None:
    """Write enhanced labels for the unlabeled split (confident prediction, else the fallback). Resumes."""
    from zsplg_fast.train.enhance import enhance as run

    cfg = _cfg(
        config,
        set_,
        {
            "train.data.source": data,
            "train.data.zero_shot": zero_shot,
            "train.enhance.threshold": threshold,
            "train.enhance.fallback": fallback,
            "train.enhance.scope": scope,
        },
    )
    keys = (
        "labels",
        "written",
        "kept",
        "confident_fraction",
        "changed_fraction",
        "miou_enhanced",
        "miou_zero_shot",
        "seconds",
    )
    _summary("enhance", run(cfg.train, checkpoint, out), keys)


def train(
    out: str = typer.Option(..., "--out", help="run folder"),
    data: str = DataOpt,
    enhanced: str = typer.Option(None, "--enhanced", help="enhanced label folder (enhance --out)"),
    labeled_only: bool = typer.Option(False, "--labeled-only", help="ground truth only (the baseline)"),
    backbone: str = BackboneOpt,
    pretrained: str = typer.Option(None, "--pretrained", help="local backbone .pth"),
    resume: bool = ResumeOpt,
    config: str | None = PresetOpt,
    set_: list[str] | None = SetOpt,
) -> None:
    """Train the final segmenter on ground truth + enhanced labels."""
    from zsplg_fast.train.supervised import train_supervised

    cfg = _cfg(
        config,
        set_,
        {
            "train.data.source": data,
            "train.data.enhanced": enhanced,
            "train.supervised.use_enhanced": False if labeled_only else None,
            "train.model.backbone": backbone,
            "train.model.pretrained": pretrained,
        },
    )
    _summary("train", train_supervised(cfg.train, out, resume=resume), _STAGE_KEYS)


def evaluate(
    pred: str = typer.Option(None, "--pred", help="folder of predicted label PNGs (folder mode)"),
    gt: str = typer.Option(None, "--gt", help="folder of ground-truth label PNGs (folder mode)"),
    classes: str = typer.Option(None, "--classes", help="voc | coco | N | FILE (folder mode)"),
    missing: str = typer.Option("error", "--missing", help="error | skip: ground truth without prediction"),
    out_of_range: str = typer.Option(
        "error", "--out-of-range", help="error | count: predictions holding values >= the class count"
    ),
    checkpoint: str = typer.Option(None, "--checkpoint", help="segmenter checkpoint (model mode)"),
    data: str = DataOpt,
    split: str = typer.Option(None, "--split", help="split to evaluate (default train.data.val)"),
    mode: str = typer.Option(None, "--mode", help="original | sliding_window | center_crop"),
    window: int = typer.Option(None, "--window", help="sliding-window / crop size"),
    json_out: str = typer.Option(None, "--json", help="write the report JSON here"),
    overlays: int = typer.Option(0, "--overlays", help="grid PNG of N samples: image | prediction | truth"),
    overlays_out: str = typer.Option(None, "--overlays-out", help="grid path (default: beside --json)"),
    config: str | None = PresetOpt,
    set_: list[str] | None = SetOpt,
) -> None:
    """mIoU (UniMatch protocol): --pred DIR --gt DIR --classes C, or --checkpoint CKPT --data SRC."""
    from zsplg_fast.train.common import resolve_classes
    from zsplg_fast.train.evaluate import evaluate_folders, evaluate_split, report_table

    if (pred is None) == (checkpoint is None) or (pred is not None and (gt is None or classes is None)):
        raise typer.BadParameter("give either --pred DIR --gt DIR --classes C, or --checkpoint CKPT")
    if overlays and pred is not None:
        raise typer.BadParameter("--overlays needs model mode (--checkpoint): folder mode has no images")
    if pred is not None:
        report = evaluate_folders(pred, gt, resolve_classes(classes), json_out, missing, out_of_range)
        console.print(report_table(report, f"{pred} vs {gt} ({report['images']} images)"))
        if report["missing"]:  # --missing skip: as the JSON's "missing"
            console.print(
                f"skipped {report['missing']} of {report['images'] + report['missing']} ground-truth files "
                "without a prediction (--missing skip); the mIoU covers the others",
                highlight=False,
            )
        _warn(report)
        stray = report["out_of_range"]
        if stray["files"]:
            names = ", ".join(list(stray["files"])[:5])
            console.print(
                f"[yellow]warning:[/] {stray['pixels']} pixels in {len(stray['files'])} predictions hold "
                f"values outside the {len(report['per_class'])} classes (scored as misses): {escape(names)}",
                highlight=False,
                soft_wrap=True,
            )
        return
    cfg = _cfg(
        config,
        set_,
        {
            "train.data.source": data,
            "train.eval.mode": mode,
            "train.eval.window": window,
        },
    )
    report = evaluate_split(cfg.train, checkpoint, split, json_out)
    if os.environ.get("RANK", "0") == "0":
        console.print(report_table(report, f"{checkpoint} ({report['mode']}, {report['images']} images)"))
        _warn(report)
        if overlays:
            from zsplg_fast.bench.overlays import split_grid

            where = overlays_out or (str(Path(json_out).with_suffix(".overlays.png")) if json_out else None)
            path = split_grid(cfg.train, checkpoint, split, overlays, where or "evaluate_overlays.png")
            console.print(f"overlays: {path}")


def register(root: typer.Typer) -> None:
    """Attach the training commands to the root app."""
    root.command("unimatch")(unimatch)
    root.command("enhance")(enhance)
    root.command("train")(train)
    root.command("evaluate")(evaluate)
