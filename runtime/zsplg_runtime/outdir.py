"""Output folders: every command writes only into folders it made itself.

A command's folder carries ``.zsplg-fast.json`` (``{"command", "version", "created"}``), written before
any other file. So:

- a missing or empty folder is new: :func:`claim_output` creates it and writes the marker first;
- a folder with the same command's marker is ours: a rerun resumes there (label, enhance, train with
  ``--resume``), and ``--force`` may replace it;
- a non-empty folder without that marker (the user's files, or another command's folder) is refused
  with one line naming what is there; ``--force`` never changes that.

Folders written by zsplg-fast before markers existed are recognised by ``legacy`` file names (e.g.
label's ``manifest.json``) and marked on their next use.

:func:`check_output` does every check without writing (call it before any model loads);
:func:`claim_output` is the moment a command decides to run. Shared artifact folders (``export/``,
``engines/``) hold many artifacts and take no marker: there a file is replaced only when its sidecar
says zsplg-fast wrote it (:func:`zsplg_fast.export.artifact.refuse_foreign`).
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from zsplg_runtime.errors import OutputExistsError, OutputWriteError
from zsplg_runtime.io import atomic_write_json

MARKER = ".zsplg-fast.json"

# How a folder made before markers existed is recognised: a file name, or a test of the folder
Legacy = Sequence[str | Callable[[Path], bool]]


def json_with(name: str, *keys: str) -> Callable[[Path], bool]:
    """A legacy test: ``folder/name`` is a JSON object holding ``keys`` (so a user's file of the same
    name does not pass)."""

    def test(folder: Path) -> bool:
        try:
            obj = json.loads((folder / name).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return False
        return isinstance(obj, dict) and all(k in obj for k in keys)

    return test


def read_marker(folder: str | Path) -> dict[str, Any] | None:
    """The folder's marker (``command``, ``version``, ``created``), or None when absent / unreadable."""
    path = Path(folder) / MARKER
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return obj if isinstance(obj, dict) and isinstance(obj.get("command"), str) else None


def describe_entries(folder: str | Path, show: int = 3) -> str:
    """A few entries of ``folder`` and their count, e.g. ``'notes.txt', 'sub/' … (5 entries)``."""
    entries = sorted(Path(folder).iterdir(), key=lambda p: p.name)
    names = [f"'{p.name}/'" if p.is_dir() else f"'{p.name}'" for p in entries[:show]]
    more = " …" if len(entries) > show else ""
    return f"{', '.join(names)}{more} ({len(entries)} {'entry' if len(entries) == 1 else 'entries'})"


def check_writable(path: str | Path) -> None:
    """Raise OutputWriteError unless ``path`` (a folder, existing or to be created) can be written.

    Checks the folder, or its nearest existing ancestor: a directory (not a file), on a writable
    filesystem, with write permission, with free space. Writes nothing.
    """
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise OutputWriteError(p, errno.ENOTDIR, "it is a file; choose a folder for --out")
    probe = p.absolute()
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        raise OutputWriteError(probe, errno.ENOTDIR, f"it is a file, so {p} cannot be created")
    st = os.statvfs(probe)
    if st.f_flag & os.ST_RDONLY:
        raise OutputWriteError(probe, errno.EROFS)
    if not os.access(probe, os.W_OK | os.X_OK):
        raise OutputWriteError(probe, errno.EACCES)
    free = st.f_bfree if os.geteuid() == 0 else st.f_bavail
    if free == 0:
        raise OutputWriteError(probe, errno.ENOSPC)


def _is_legacy(folder: Path, legacy: Legacy) -> bool:
    return any(t(folder) if callable(t) else (folder / t).exists() for t in legacy)


def check_output(folder: str | Path, command: str, *, legacy: Legacy = ()) -> bool:
    """May ``command`` write into ``folder``? True if it is ours already, False if new or empty.

    Writes nothing, loads nothing: call it before any model loads.

    Raises:
        OutputExistsError: ``folder`` holds files and no marker of ``command`` (another command's
            folder, or the user's files); the message names a few entries and their count.
        OutputWriteError: ``folder`` is a file, or cannot be written (permission, read-only, full).
    """
    p = Path(folder)
    check_writable(p)
    if not p.is_dir() or not any(p.iterdir()):
        return False
    marker = read_marker(p)
    if marker is not None and marker["command"] == command:
        return True
    if marker is None and _is_legacy(p, legacy):
        return True
    whose = (
        f"was made by `zsplg-fast {marker['command']}`"
        if marker is not None
        else f"is not empty and was not made by `zsplg-fast {command}`"
    )
    raise OutputExistsError(
        p, f"{whose} (holds {describe_entries(p)}); nothing was written: choose another --out"
    )


def write_marker(folder: str | Path, command: str) -> None:
    """Create ``folder`` and write ``command``'s marker into it (the first file of a new folder)."""
    from zsplg_runtime import __version__

    p = Path(folder)
    try:
        p.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OutputWriteError.from_os(p, e) from e
    record = {"command": command, "version": __version__, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    atomic_write_json(p / MARKER, record)


def claim_output(folder: str | Path, command: str, *, legacy: Legacy = ()) -> bool:
    """Decide to write into ``folder``: check it (:func:`check_output`), create it, mark it.

    Returns True when the folder was ours already (a rerun: resume), False when it is new.
    """
    ours = check_output(folder, command, legacy=legacy)
    if read_marker(folder) is None:
        write_marker(folder, command)
    return ours


def check_replaceable(folder: str | Path, command: str, force: bool, *, legacy: Legacy = ()) -> bool:
    """For commands whose rerun replaces the folder's files (deploy, bench): may ``folder`` be used?

    Returns True when ``folder`` exists, is ours and ``force`` is given (replace it), False when it is
    new or empty. Writes nothing.

    Raises:
        OutputExistsError: ``folder`` is ours but ``force`` is false; or it is not ours (even with
            ``force``: ``--force`` never deletes a folder zsplg-fast did not make).
        OutputWriteError: as :func:`check_output`.
    """
    if not check_output(folder, command, legacy=legacy):
        return False
    if not force:
        raise OutputExistsError(
            folder, f"holds a previous `zsplg-fast {command}` folder; pass --force to replace it"
        )
    return True


def move_into_place(
    tmp: str | Path, out: str | Path, command: str, force: bool, *, legacy: Legacy = ()
) -> None:
    """Put a finished folder ``tmp`` (made beside ``out``) at ``out``, for commands that build their
    folder whole and replace it on ``--force`` (deploy, labels export / import / report).

    ``out`` is checked again (:func:`check_replaceable`: it may have changed since the first check). A
    new or empty ``out`` becomes ``tmp``; a folder of ``command``'s, with ``force``, is renamed aside
    first and removed after, so ``out`` always holds a complete folder.

    Raises:
        OutputExistsError, OutputWriteError: as :func:`check_replaceable`.
    """
    t, o = Path(tmp), Path(out)
    old = None
    if check_replaceable(o, command, force, legacy=legacy):
        old = o.with_name(f".{o.name}.old-{os.getpid()}")
        os.replace(o, old)
    os.replace(t, o)  # POSIX rename replaces an empty folder
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _sidecar_is_ours(sidecar: Path, keys: Sequence[str]) -> bool:
    try:
        obj = json.loads(sidecar.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(obj, dict) and all(k in obj for k in keys)


def refuse_foreign_file(
    files: Sequence[str | Path],
    sidecar: str | Path,
    force: bool,
    *,
    keys: Sequence[str] = ("sidecar_version",),
) -> None:
    """Shared artifact folders (``export/``, ``engines/``): may ``files`` (an artifact, its external
    data, its sidecar) be written?

    New names are always fine. An existing one is replaced only with ``force``, and only when
    ``sidecar`` is ours (a JSON object holding ``keys``): a file zsplg-fast did not write is never
    replaced, ``--force`` or not. Writes nothing.

    Raises:
        OutputExistsError: naming the first existing file and what to do.
    """
    existing = [Path(f) for f in files if Path(f).exists()]
    if not existing:
        return
    if not _sidecar_is_ours(Path(sidecar), keys):
        raise OutputExistsError(
            existing[0],
            f"exists and was not written by zsplg-fast (no sidecar {Path(sidecar).name} of ours beside "
            "it); nothing was replaced, --force or not: move it, or choose another --out",
        )
    if not force:
        raise OutputExistsError(
            existing[0], "already exists; pass --force to replace it, or choose another --out"
        )
