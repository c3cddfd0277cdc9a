"""`zsplg-fast data synth|coco-masks|check`: thin wrappers over ``zsplg_fast.data``."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.markup import escape
from rich.progress import Progress
from rich.table import Table

from zsplg_fast.cli.common import ConfigOpt, SetOpt, build_config, console
from zsplg_fast.errors import ConfigError

app = typer.Typer(help="Datasets: synthetic data, COCO masks, checks.", no_args_is_help=True)

_SHOWN_PROBLEMS = 20


@app.command("synth")
def synth(
    out: Path = typer.Option(..., "--out", help="output folder (VOC layout + split files)"),
    num: int = typer.Option(..., "--num", help="number of images"),
    classes: int = typer.Option(6, "--classes", help="number of shape classes (background excluded)"),
    seed: int = typer.Option(0, "--seed"),
    size: int = typer.Option(256, "--size", help="image side in pixels"),
) -> None:
    """Write a synthetic shapes dataset with exact masks and UniMatch split files."""
    from zsplg_fast.data.synthetic import generate_dataset  # lazy: owned by another module

    result = generate_dataset(out, num, num_classes=classes, seed=seed, size=size)
    console.print_json(json.dumps(result, default=str))


@app.command("coco-masks")
def coco_masks(
    ann: Path = typer.Option(..., "--ann", help="COCO instances JSON"),
    out: Path = typer.Option(..., "--out", help="folder receiving masks/<split>/<id>.png"),
    split: str | None = typer.Option(None, "--split", help="sub-folder name (default: from the file name)"),
    force: bool = typer.Option(False, "--force", help="replace existing mask files"),
) -> None:
    """Convert COCO instances to UniMatch-style semantic masks (81 classes, crowd = 255)."""
    from zsplg_fast.data.coco import convert_coco

    console.print_json(json.dumps(convert_coco(ann, out, split=split, force=force)))


@app.command("check")
def check(
    data: str | None = typer.Option(
        None, "--data", help="voc:DIR | coco:DIR[:ANN] | folder:DIR | synthetic:DIR"
    ),
    split: str | None = typer.Option(None, "--split", help="split file or name"),
    num_classes: int | None = typer.Option(
        None, "--num-classes", help="check label values < N (or 255); default: the dataset's classes.txt"
    ),
    config: Path | None = ConfigOpt,
    set_: list[str] | None = SetOpt,
) -> None:
    """Load every image and label of a source; print counted problems (exit 1 if any)."""
    from zsplg_fast.data import open_source
    from zsplg_fast.data.check import check_source

    cfg = build_config(config, set_, {"data.source": data, "data.split": split}).data
    if cfg.source is None:
        raise ConfigError("data.source", None, "no data source given", valid="--data KIND:DIR")
    source = open_source(cfg.source, cfg.split)
    with Progress(console=console, transient=True) as bar:
        task = bar.add_task("checking", total=len(source.samples))
        report = check_source(
            source,
            num_classes=num_classes,
            max_long_side=cfg.max_long_side,
            rescale_high_bit_depth=cfg.rescale_high_bit_depth,
            progress=lambda done, _total: bar.update(task, completed=done),
        )
    table = Table(title=f"data check: {report.source}")
    table.add_column("what")
    table.add_column("count", justify="right")
    for key, val in (("samples", report.samples), ("labeled", report.labeled), ("ok", report.ok)):
        table.add_row(key, str(val))
    for key, val in sorted(report.problem_counts.items()):
        table.add_row(f"[red]{key}[/]", str(val))
    for key, val in report.notes.items():
        table.add_row(f"[yellow]{key}[/]", str(val))
    for key, val in report.load_stats.to_dict().items():
        table.add_row(f"[dim]{key}[/]", str(val))
    console.print(table)
    checked = (
        f"label values checked against {report.num_classes} classes ({report.classes_from})"
        if report.num_classes is not None
        else "label values not checked against a class count (no classes.txt; pass --num-classes N)"
    )
    console.print(checked, highlight=False)
    if report.all_ignore:
        ids = ", ".join(report.all_ignore[:_SHOWN_PROBLEMS])
        console.print(f"[yellow]all-ignore (255) masks:[/] {escape(ids)}", highlight=False, soft_wrap=True)
    for skip in report.label_skips[:_SHOWN_PROBLEMS]:
        what = escape(f"{skip.get('annotation')} ({skip.get('image')}): {skip.get('reason')}")
        console.print(f"[yellow]skipped annotation[/] {what}", highlight=False, soft_wrap=True)
    for p in report.problems[:_SHOWN_PROBLEMS]:
        line = f"[red]{escape(p.error)}[/] {escape(p.sample_id)}: {escape(p.message)}"
        console.print(line, highlight=False, soft_wrap=True)  # ids and messages are not markup
    if len(report.problems) > _SHOWN_PROBLEMS:
        console.print(f"... and {len(report.problems) - _SHOWN_PROBLEMS} more")
    if report.problems:
        raise typer.Exit(1)


def register(root: typer.Typer) -> None:
    """Attach this command group to the root app."""
    root.add_typer(app, name="data")
