"""Shared CLI plumbing: the console, config loading from --config/--set plus option overrides."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.console import Console

from zsplg_fast.config import Config, load_config, parse_overrides

# Exit status (README "Exit codes"): 0 everything done; 3 the job completed but some images failed
# (recorded in errors.jsonl); 2 usage, config or input errors; 1 a failure that stopped the job.
EXIT_SOME_FAILED = 3

console = Console(stderr=False)
err_console = Console(stderr=True)

ConfigOpt = typer.Option(None, "--config", "-c", help="YAML config file", exists=False)
SetOpt = typer.Option(
    None, "--set", help="override any config key: --set amg.points_per_side=16 (repeatable)"
)


def build_config(
    config: Path | None, sets: list[str] | None, options: dict[str, Any] | None = None
) -> Config:
    """Defaults ← YAML ← ``--set`` ← explicit CLI options (None means 'not given')."""
    overrides: dict[str, Any] = parse_overrides(sets or [])
    for k, v in (options or {}).items():
        if v is not None:
            overrides[k] = v
    return load_config(config, overrides)
