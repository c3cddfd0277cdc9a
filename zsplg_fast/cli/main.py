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


def main(argv: list[str] | None = None) -> None:
    """Run the CLI. Exit status: 0 done; 3 done, but some images failed (their errors.jsonl); 2 usage,
    config or input errors; 1 a failure that stopped the job (I/O errors among them). Typed errors and
    I/O errors print as one line unless ``--debug`` is given."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    debug = "--debug" in (sys.argv if argv is None else argv)
    try:
        app(args=argv)  # standalone mode: usage errors print and exit 2 by themselves
    except ZsplgError as e:
        if debug:
            raise
        _one_line(f"{type(e).__name__}: {e}")
        sys.exit(e.exit_code)
    except OSError as e:  # an I/O failure outside our writers: the path and the errno text
        if debug:
            raise
        where = f"{e.filename}: " if e.filename else ""
        _one_line(f"{type(e).__name__}: {where}{e.strerror or e} (--debug shows the traceback)")
        sys.exit(1)


def _one_line(message: str) -> None:
    """Print ``error: MESSAGE`` as one line: line breaks inside it (a file name holding one, a library's
    multi-line text) are shown escaped."""
    from rich.markup import escape

    from zsplg_fast.cli.common import err_console

    message = message.replace("\r", "\\r").replace("\n", "\\n")
    err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)


if __name__ == "__main__":
    main()
