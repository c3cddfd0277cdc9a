"""`zsplg-fast run CONFIG.yaml` and `zsplg-fast demo`: the whole recipe, stage by stage."""

from __future__ import annotations

import time
from importlib import resources
from pathlib import Path

import typer
from rich.table import Table

from zsplg_fast.cli.common import SetOpt, build_config, console


def _pct(v: float | None) -> str:
    return "—" if v is None else f"{100 * v:.1f}"


def print_outcomes(outcomes: list, title: str) -> None:
    """The stage table: time and headline figure of each stage, then the four mIoUs."""
    from zsplg_fast.pipeline.run import stage_table

    t = Table(title=title)
    for col in ("stage", "status", "seconds", "folder"):
        t.add_column(col)
    for o in outcomes:
        t.add_row(o.name, "reused" if o.reused else "ran", f"{o.seconds:.1f}", o.folder)
    console.print(t)
    figures = stage_table(outcomes)
    m = Table(title="mIoU (%)")
    m.add_column("what")
    m.add_column("mIoU", justify="right")
    names = {
        "zero_shot_label_miou": "zero-shot labels (unlabeled split)",
        "enhanced_label_miou": "enhanced labels (unlabeled split)",
        "final_val_miou": "final model (val)",
        "baseline_val_miou": "labeled-only baseline (val)",
    }
    for k, label in names.items():
        m.add_row(label, _pct(figures[k]))
    console.print(m)


def run(
    config: Path = typer.Argument(..., help="YAML config (all sections; see `zsplg-fast config show`)"),
    data: str = typer.Option(None, "--data", help="dataset, e.g. voc:DIR (else data.source)"),
    out: str = typer.Option(None, "--out", help="run folder (else pipeline.out)"),
    set_: list[str] | None = SetOpt,
) -> None:
    """Zero-shot labels → UniMatch → enhance → final model → evaluate → export; reruns skip done stages."""
    from zsplg_fast.pipeline import run_pipeline

    cfg = build_config(config, set_, {"data.source": data, "pipeline.out": out})
    outcomes = run_pipeline(cfg, notify=lambda s, e: console.print(f"[bold]{s}[/]: {e}"))
    print_outcomes(outcomes, f"run → {cfg.pipeline.out}")


def demo(
    out: Path = typer.Option(Path("demo_out"), "--out", help="demo folder (data/ and run/)"),
    scale: str = typer.Option("demo", "--scale", help="demo (≈ minutes) | ci (shorter)"),
    set_: list[str] | None = SetOpt,
) -> None:
    """The whole recipe on the built-in toy world with the shipped toy SAM and CLIP."""
    from zsplg_fast.data.synthetic import make_toy_world
    from zsplg_fast.pipeline import run_pipeline

    t0 = time.perf_counter()
    data = out / "data"
    make_toy_world(data, scale=scale)  # complete files are kept; another scale's world is refused
    cfg_file = resources.files("zsplg_fast") / "configs" / f"toy_{scale}.yaml"
    with resources.as_file(cfg_file) as path:
        cfg = build_config(path, set_, {"data.source": f"synthetic:{data}", "pipeline.out": str(out / "run")})
    outcomes = run_pipeline(cfg, notify=lambda s, e: console.print(f"[bold]{s}[/]: {e}"))
    print_outcomes(outcomes, f"demo → {out} ({time.perf_counter() - t0:.0f} s)")


def register(app: typer.Typer) -> None:
    """Attach `run` and `demo` to the root app."""
    app.command("run")(run)
    app.command("demo")(demo)
