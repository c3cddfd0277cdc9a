"""Property-based tests of every reader of user-supplied files (hypothesis).

The property, for each reader: every input ends in success or in one of the project's typed errors, printed
as one line with exit 2 through the CLI; never a traceback, a write outside ``--out``, or a partial output
left behind.

CI runs the ``ci`` profile: derandomized (the same examples on every run), no example database (nothing is
written into the repo; hypothesis' other caches go to the temp folder) and a bounded example count per
test. ``ZSPLG_FUZZ_PROFILE=deep`` explores with
fresh random examples, ``ZSPLG_FUZZ_SCALE`` (default 50) times more of them (a local hunt, not CI).
"""

from __future__ import annotations

import contextlib
import functools
import io
import os
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

hypothesis = pytest.importorskip("hypothesis", reason="hypothesis: the [dev] extra")
from hypothesis import HealthCheck, settings  # noqa: E402
from hypothesis.configuration import set_hypothesis_home_dir  # noqa: E402

# hypothesis keeps a cache (constants/) under ./.hypothesis even with database=None: keep the repo clean
if not os.environ.get("HYPOTHESIS_STORAGE_DIRECTORY"):
    set_hypothesis_home_dir(Path(tempfile.gettempdir()) / "zsplg-fast-hypothesis")

_SLOW_OK = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.function_scoped_fixture]
settings.register_profile(
    "ci", derandomize=True, database=None, deadline=None, max_examples=40, suppress_health_check=_SLOW_OK
)
settings.register_profile(
    "deep", database=None, deadline=None, max_examples=2000, suppress_health_check=_SLOW_OK
)
PROFILE = os.environ.get("ZSPLG_FUZZ_PROFILE", "ci")
settings.load_profile(PROFILE)


def budget(n: int) -> settings:
    """``@budget(n)``: ``n`` examples in CI (the suite's time budget); under the ``deep`` profile
    ``ZSPLG_FUZZ_SCALE`` (default 50) times more."""
    return settings(max_examples=n if PROFILE == "ci" else int(os.environ.get("ZSPLG_FUZZ_SCALE", "50")) * n)


@dataclass
class CliResult:
    """Exit status, stdout and stderr of one in-process CLI run."""

    code: int
    out: str
    err: str


@functools.cache
def _command() -> Any:
    import typer

    from zsplg_fast.cli.main import app

    return typer.main.get_command(app)


def run_cli(argv: Sequence[str]) -> CliResult:
    """``zsplg-fast ARGV`` through the real entry point (``main``: typed errors → one line + exit code).

    Any exception that escapes ``main`` (a traceback for a user) propagates and fails the test. Typer
    rebuilds its click command on every call (~0.2 s here); the command is built once and ``main`` runs it
    (what ``app(args=...)`` does with pretty exceptions off)."""
    from unittest import mock

    from zsplg_fast.cli import main as cli

    out, err = io.StringIO(), io.StringIO()
    code = 0
    with (
        contextlib.redirect_stdout(out),
        contextlib.redirect_stderr(err),
        mock.patch.object(cli, "app", _command()),
    ):
        try:
            cli.main(list(argv))
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    return CliResult(code, out.getvalue(), err.getvalue())


def files_under(root: Path) -> dict[str, tuple[int, int]]:
    """Relative path → (size, mtime_ns) of every file and folder under ``root``."""
    out = {}
    for p in root.rglob("*"):
        st = p.lstat()
        out[p.relative_to(root).as_posix()] = (st.st_size if p.is_file() else -1, st.st_mtime_ns)
    return out


def check_outcome(
    res: CliResult,
    before: dict[str, tuple[int, int]],
    after: dict[str, tuple[int, int]],
    out_rel: str | None,
    allowed: Sequence[int] = (0, 2),
    explain: Callable[[], str] = lambda: "",
) -> None:
    """The property. ``before``/``after``: :func:`files_under` of the example's folder around the run;
    ``out_rel``: the ``--out`` folder relative to it (None: the command writes nothing).

    - the exit status is in ``allowed`` (0 done, 2 a typed input error);
    - exit 2 prints exactly one line, ``error: <TypedError>: ...``, and no traceback;
    - nothing was written or changed outside ``--out``;
    - after a failure ``--out`` holds nothing new (no partial output)."""
    text = res.out + res.err
    ctx = f"exit {res.code}\n{text[-2000:]}\n{explain()}"
    assert "Traceback" not in text, ctx
    assert res.code in allowed, ctx
    if res.code == 2:
        lines = [ln for ln in res.err.splitlines() if ln.strip()]
        assert len(lines) == 1 and lines[0].startswith("error: "), ctx
        assert lines[0].split(":")[1].strip().endswith("Error"), ctx  # a typed error's class name

    def inside(k: str) -> bool:
        return out_rel is not None and (k == out_rel or k.startswith(out_rel + "/"))

    # new entries, and files whose size or mtime moved (a folder's mtime moves with any entry in it)
    changed = {k for k in after if k not in before or (before[k][0] != -1 and before[k] != after[k])}
    outside = {k for k in changed if not inside(k)}
    assert not outside, f"written outside --out: {sorted(outside)[:5]}\n{ctx}"
    removed = {k for k in before if k not in after}
    assert not removed, f"removed: {sorted(removed)[:5]}\n{ctx}"
    if res.code != 0 and out_rel is not None:
        new = {k for k in changed if inside(k) and k != out_rel}
        assert not new, f"partial output after a failure: {sorted(new)[:5]}\n{ctx}"
