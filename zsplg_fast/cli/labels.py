"""`zsplg-fast labels export / import / report`: the review loop around a label folder."""

from __future__ import annotations

import typer
from rich.markup import escape

from zsplg_fast.cli.common import console

labels_app = typer.Typer(
    help="Review zero-shot labels: export to CVAT / Label Studio / FiftyOne / COCO / YOLO-seg, import "
    "corrections, report page.",
    no_args_is_help=True,
)

PREFIX_HELP = "image URL prefix for Label Studio (local-files or a server root)"
FORCE_HELP = "replace a previous folder of this command (never a folder of yours)"


@labels_app.command("export")
def export(
    labels_dir: str = typer.Argument(..., help="a label folder written by `label`"),
    fmt: str = typer.Option(..., "--format", "-f", help="cvat | labelstudio | fiftyone | coco | yolo-seg"),
    out: str = typer.Option(..., "--out", help="new output folder (or, with --force, a previous export)"),
    review: int = typer.Option(None, "--review", help="only the N images most in need of review"),
    image_prefix: str = typer.Option("/data/local-files/?d=", "--image-prefix", help=PREFIX_HELP),
    model_version: str = typer.Option("zsplg-fast", "--model-version", help="recorded with predictions"),
    force: bool = typer.Option(False, "--force", help=FORCE_HELP),
) -> None:
    """Write a label folder in a review tool's format (exact pixels; YOLO-seg reports the IoU lost)."""
    from zsplg_fast.review.run import export_labels

    s = export_labels(labels_dir, fmt, out, review, image_prefix, model_version, force)
    console.print(f"[bold]{s['format']}[/]: {s['images']} of {s['of']} images → {escape(out)}")
    for note in s["notes"]:
        console.print(f"[yellow]note:[/] {escape(note)}")


@labels_app.command("import")
def import_(
    source: str = typer.Argument(..., help="CVAT zip, Label Studio JSON or COCO JSON"),
    fmt: str = typer.Option(..., "--format", "-f", help="cvat | labelstudio | coco"),
    classes: str = typer.Option(
        ..., "--classes", help="the label folder it was exported from (recommended), a classes file, or a,b,c"
    ),
    out: str = typer.Option(
        ..., "--out", help="new label folder that `train` reads (or, with --force, a previous import)"
    ),
    image_prefix: str = typer.Option("/data/local-files/?d=", "--image-prefix", help=PREFIX_HELP),
    uncovered: str = typer.Option(None, "--uncovered", help="background | ignore (default: the folder's)"),
    force: bool = typer.Option(False, "--force", help=FORCE_HELP),
) -> None:
    """Turn corrected annotations back into label PNGs; images not in SOURCE keep the folder's labels."""
    from zsplg_fast.review.run import import_labels

    s = import_labels(fmt, source, classes, out, image_prefix, uncovered, force)
    console.print(
        f"imported {s['imported']} images ({s['kept_from_base']} kept from the folder) → {escape(out)}"
    )


@labels_app.command("report")
def report(
    labels_dir: str = typer.Argument(..., help="a label folder written by `label`"),
    out: str = typer.Option(
        ..., "--out", help="new report folder (index.html; or, with --force, a previous report)"
    ),
    top: int = typer.Option(500, "--top", help="thumbnails for the N images most in need of review"),
    per_page: int = typer.Option(100, "--per-page", help="thumbnails per page"),
    gt: str = typer.Option(None, "--gt", help="folder of ground-truth PNGs: adds evaluate's per-class IoU"),
    force: bool = typer.Option(False, "--force", help=FORCE_HELP),
) -> None:
    """A static HTML page (one folder, opens from disk): class shares, review order, thumbnails."""
    from zsplg_fast.review.report import write_report

    index = write_report(labels_dir, out, top=top, per_page=per_page, gt=gt, force=force)
    console.print(f"report → {escape(str(index))}")


def register(app: typer.Typer) -> None:
    """Attach the `labels` group to the root app."""
    app.add_typer(labels_app, name="labels")
