"""`zsplg-fast config show|check`."""

from __future__ import annotations

from pathlib import Path

import typer
import yaml

from zsplg_fast.cli.common import ConfigOpt, SetOpt, build_config, console
from zsplg_fast.config import fingerprint, to_dict

app = typer.Typer(help="Inspect the effective configuration.", no_args_is_help=True)


@app.command("show")
def show(config: Path | None = ConfigOpt, set_: list[str] | None = SetOpt) -> None:
    """Print the effective config (defaults ← YAML ← --set) as YAML, with its fingerprint."""
    cfg = build_config(config, set_)
    console.print(yaml.safe_dump(to_dict(cfg), sort_keys=False), end="", markup=False, highlight=False)
    console.print(f"# fingerprint: {fingerprint(cfg)}", markup=False, highlight=False)


def register(root: typer.Typer) -> None:
    """Attach this command group to the root app."""
    root.add_typer(app, name="config")
