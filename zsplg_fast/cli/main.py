"""Entry point of the `zsplg-fast` CLI. Each command group lives in its own module with ``register(app)``."""

from __future__ import annotations

import importlib
import os
import sys

import typer

from zsplg_fast.errors import ZsplgError

# Each module exposes ``register(app: typer.Typer) -> None``.
COMMAND_MODULES: tuple[str, ...] = (
    "config_cmd",
    "data",
    "label",
    "labels",
    "export",
    "train",
    "bench",
    "deploy",
    "run",
    "toy",
)

app = typer.Typer(
    name="zsplg-fast",
    help="Zero-shot pseudo labels (SAM x CLIP), UniMatch enhanced labels, engines, deployable segmenters.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

_STATE = {"debug": False}


@app.callback()
def _root(debug: bool = typer.Option(False, "--debug", help="show full tracebacks")) -> None:
    _STATE["debug"] = debug


for _mod in COMMAND_MODULES:
    importlib.import_module(f"zsplg_fast.cli.{_mod}").register(app)


def main() -> None:
    """Run the CLI; typed errors print as one line (exit 2) unless --debug is given."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    debug = "--debug" in sys.argv
    try:
        app()  # standalone mode: usage errors print and exit 2 by themselves
    except ZsplgError as e:
        if debug:
            raise
        from rich.markup import escape

        from zsplg_fast.cli.common import err_console

        err_console.print(
            f"[bold red]error:[/] {type(e).__name__}: {escape(str(e))}", highlight=False, soft_wrap=True
        )
        sys.exit(2)


if __name__ == "__main__":
    main()
