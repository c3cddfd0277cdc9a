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
    """Print the effective config (defaults ← model presets ← YAML ← --set) as YAML, its fingerprint, and
    where each value that is not a default came from."""
    from zsplg_fast.config import parse_overrides
    from zsplg_fast.config.loader import load_yaml
    from zsplg_fast.config.presets import value_sources

    cfg = build_config(config, set_)
    console.print(yaml.safe_dump(to_dict(cfg), sort_keys=False), end="", markup=False, highlight=False)
    console.print(f"# fingerprint: {fingerprint(cfg)}", markup=False, highlight=False)
    yaml_data = load_yaml(config) if config is not None else {}
    sources = value_sources(yaml_data, str(config), {"--set": parse_overrides(set_ or [])})
    console.print("# sources (keys not listed keep their default):", markup=False, highlight=False)
    for key, where in sorted(sources.items()):
        console.print(f"#   {key}: {where}", markup=False, highlight=False, soft_wrap=True)


def register(root: typer.Typer) -> None:
    """Attach this command group to the root app."""
    root.add_typer(app, name="config")
