"""``zsplg-runtime``: the edge command (argparse; no dependency beyond the runtime's own).

``zsplg-runtime infer DEPLOY_DIR --input IMAGES --out OUT [--backend ort|trt] [--overlays]
[--threads N] [--force] [--debug]``: the options and exit codes of ``zsplg-fast infer``:
0 done; 3 done, but some images failed (their errors.jsonl); 2 usage, config or input errors; 1 a failure
that stopped the job (I/O errors among them). Typed errors print as one line unless ``--debug``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from zsplg_runtime import __version__
from zsplg_runtime.errors import ZsplgError

EXIT_SOME_FAILED = 3


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="zsplg-runtime", description="Run a zsplg-fast deploy folder without PyTorch."
    )
    p.add_argument("--version", action="version", version=f"zsplg-fast-runtime {__version__}")
    p.add_argument("--debug", action="store_true", help="show full tracebacks")
    sub = p.add_subparsers(dest="command", required=True)
    inf = sub.add_parser("infer", help="predict palette PNG label maps (and overlays) for images")
    inf.add_argument("deploy_dir", type=Path, help="a folder written by `zsplg-fast deploy`")
    inf.add_argument("--input", dest="input_", type=Path, required=True, help="an image file or a folder")
    inf.add_argument(
        "--out", type=Path, default=Path("preds"), help="output folder (labels/, overlays/, errors.jsonl)"
    )
    inf.add_argument("--backend", default="ort", help="ort | trt (the plan built on this device)")
    inf.add_argument("--overlays", action="store_true", help="also write image + colour mask + legend PNGs")
    inf.add_argument("--threads", type=int, default=None, help="onnxruntime intra-op threads")
    inf.add_argument("--force", action="store_true", help="reuse an --out folder of a previous run")
    # SUPPRESS: the sub-command's default must not overwrite `zsplg-runtime --debug infer …`
    inf.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show full tracebacks")
    return p


def _one_line(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)


def _infer(args: argparse.Namespace) -> int:
    from zsplg_runtime.infer import infer

    def progress(done: int, total: int, sample_id: str) -> None:
        if sys.stderr.isatty():
            print(f"\rinfer {done}/{total} {sample_id[:40]:<40}", end="", file=sys.stderr, flush=True)

    report = infer(
        args.deploy_dir,
        args.input_,
        args.out,
        args.backend,
        args.overlays,
        threads=args.threads,
        force=args.force,
        progress=progress,
    )
    if sys.stderr.isatty():
        print(file=sys.stderr)
    print(
        f"{report['written']} of {report['images']} images → {args.out}/labels"
        + (" (+ overlays/)" if args.overlays else "")
        + f", {report['images_per_s']} images/s on {report['backend']} ({report['device']})"
    )
    if report["failed"]:
        print(f"{report['failed']} images skipped; see {args.out}/errors.jsonl")
        return EXIT_SOME_FAILED
    return 0


def main(argv: Sequence[str] | None = None) -> None:
    """Run the CLI and exit with its status (see the module docstring)."""
    args = _parser().parse_args(argv)  # usage errors: argparse prints them and exits 2
    try:
        code = _infer(args)
    except ZsplgError as e:
        if args.debug:
            raise
        _one_line(f"{type(e).__name__}: {e}")
        sys.exit(e.exit_code)
    except OSError as e:  # an I/O failure outside our writers: the path and the errno text
        if args.debug:
            raise
        where = f"{e.filename}: " if e.filename else ""
        _one_line(f"{type(e).__name__}: {where}{e.strerror or e} (--debug shows the traceback)")
        sys.exit(1)
    sys.exit(code)


if __name__ == "__main__":
    main()
