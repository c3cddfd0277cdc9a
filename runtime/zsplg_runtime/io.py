"""Atomic writes and small file helpers. Every file the project writes goes through here."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

TMP_SUFFIX = ".tmp"

# errnos that mean "this destination cannot be written", turned into one-line OutputWriteErrors
WRITE_ERRNOS = frozenset(
    {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EIO, errno.EFBIG}
    | {errno.ENOTDIR, errno.EISDIR, errno.EEXIST}
)


def as_write_error(path: str | Path, err: OSError) -> OSError:
    """``err`` as an OutputWriteError naming ``path`` when its errno says ``path`` cannot be written."""
    from zsplg_runtime.errors import OutputWriteError

    if isinstance(err, OutputWriteError) or err.errno not in WRITE_ERRNOS:
        return err
    return OutputWriteError.from_os(path, err)


def _reraise_as_write_error(path: str | Path, err: OSError) -> None:
    new = as_write_error(path, err)
    if new is err:
        raise err
    raise new from err


def current_umask() -> int:
    """The process umask, read without changing it (Linux: /proc/self/status); elsewhere set and
    restored at once (racy only against threads creating files in that instant)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temp path beside ``path``; on success ``os.replace`` it into place, else remove it.

    The temp name ends with ``.tmp`` and starts with ``.``, so resume scans can find leftovers.
    A failure to write (disk full, permission, read-only, a path that is a file) raises
    :class:`~zsplg_runtime.errors.OutputWriteError` naming ``path``, and leaves no temp file.
    """
    dst = Path(path)
    try:
        dst.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{dst.name}.", suffix=TMP_SUFFIX, dir=dst.parent)
    except OSError as e:
        _reraise_as_write_error(dst, e)
    tmp_path = Path(tmp)
    try:
        os.close(fd)
        os.chmod(tmp, 0o666 & ~current_umask())  # mkstemp makes 0600; published files get the usual ones
        yield tmp_path
        os.replace(tmp_path, dst)
    except BaseException as e:
        with contextlib.suppress(OSError):
            tmp_path.unlink()
        if isinstance(e, OSError):
            _reraise_as_write_error(dst, e)
        raise


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (temp file, fsync, ``os.replace``)."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, obj: Any, indent: int = 2) -> None:
    """Write ``obj`` as JSON to ``path`` atomically."""
    atomic_write_text(path, json.dumps(obj, indent=indent, sort_keys=False, default=str) + "\n")


def atomic_write_with(path: str | Path, writer: Callable[[IO[bytes]], None]) -> None:
    """Call ``writer(fileobj)`` on a temp file, then move it to ``path`` atomically."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        writer(f)
        f.flush()
        os.fsync(f.fileno())


def append_jsonl(path: str | Path, record: dict[str, Any]) -> None:
    """Append one JSON line (single ``write`` call with O_APPEND, so lines never interleave)."""
    p = Path(path)
    line = (json.dumps(record, default=str) + "\n").encode()
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            os.write(fd, line)
        finally:
            os.close(fd)
    except OSError as e:
        _reraise_as_write_error(p, e)


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """Read a JSONL file; a torn last line (from a kill) is ignored."""
    p = Path(path)
    if not p.exists():
        return []
    out = []
    for line in p.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(chunk)
            if not b:
                break
            h.update(b)
    return h.hexdigest()


def remove_stale_temps(folder: str | Path) -> int:
    """Delete leftover ``.*.tmp`` files below ``folder`` (from killed runs). Returns how many."""
    n = 0
    root = Path(folder)
    if not root.exists():
        return 0
    for p in root.rglob(f".*{TMP_SUFFIX}"):
        with contextlib.suppress(FileNotFoundError):
            p.unlink()
            n += 1
    return n


def refuse_overwrite(path: str | Path, force: bool = False) -> None:
    """Raise OutputExistsError if ``path`` exists and ``force`` is false (never write over a user's file)."""
    from zsplg_runtime.errors import OutputExistsError

    p = Path(path)
    if p.exists() and not force:
        raise OutputExistsError(p, "already exists; pass --force to replace it, or choose another --out")
