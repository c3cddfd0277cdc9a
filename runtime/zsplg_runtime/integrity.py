"""An artifact is what its sidecar says, or it is refused: size and sha256 of every file of an artifact.

Standard library only, besides the runtime's own error base (no torch or numpy): the torch-free runtime
carries it, and ``zsplg_fast`` uses it from here (one implementation).

Writers record, in the sidecar, ``"files": {"<name>": {"bytes": int, "sha256": hex}}`` for the model
file (first) and its external data (names relative to the sidecar's folder; :func:`file_records`).
Loaders call :func:`verify_artifact` (label ``--engines``, infer, inspect, build, every ORT /
TensorRT engine): a file whose size or sha256 differs from the record is refused with
:class:`ArtifactIntegrityError` (exit 2), one line naming the file, the expected and the found hash,
and the fix. Sidecars written before ``files`` existed are checked against their ``sha256`` (sha256
over the files' sha256s) and ``size_bytes``; a plan sidecar of that age records only its size.

Hashing a 2.5 GB vit_h encoder takes seconds, so a computed hash is cached, keyed by the file's real
path, size, mtime_ns, ctime_ns and inode: in memory for this process, and for files of at least
:data:`CACHE_MIN_BYTES` in a small JSON file in the user's cache folder (``$ZSPLG_FAST_CACHE_DIR``, else
``$XDG_CACHE_HOME/zsplg-fast``, else ``~/.cache/zsplg-fast``) so a new process does not hash again.
ctime_ns is in the key because ``cp -p`` or ``touch -r`` can give a swapped file the old size and
mtime, but no user-space call can set ctime. The cache file is written atomically (temp file +
``os.replace``); losing it, or a read that fails, only means hashing again. It lives outside the
artifact folders, which may be read-only or copied to devices and must hold only what deploy wrote.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from zsplg_runtime.errors import ZsplgError

CACHE_FILE = "sha256-cache.json"
CACHE_VERSION = 1
CACHE_MIN_BYTES = 16 << 20  # smaller files hash in milliseconds: not worth a cache write
CACHE_MAX_ENTRIES = 256
CHUNK = 1 << 20
FIX_EXPORT = "export it again (zsplg-fast export, or the command that made it)"

_memo: dict[tuple[str, int, int, int, int], str] = {}  # this process's hashes, by stat key


class ArtifactIntegrityError(ZsplgError, ValueError):
    """An artifact file differs from its sidecar's record (size or sha256): swapped, edited or
    truncated. One line: the file, the expected and found sha256 (and sizes), and the fix.
    Re-exported by ``zsplg_fast.errors``; ``exit_code`` is the CLI's exit status."""

    exit_code = 2

    def __init__(
        self, path: str | Path, expected: str, found: str, fix: str = FIX_EXPORT, detail: str = ""
    ) -> None:
        self.path = str(path)
        self.expected = expected
        self.found = found
        self.fix = fix
        self.detail = detail
        extra = f" ({detail})" if detail else ""
        super().__init__(
            f"{self.path}: sha256 {found} differs from its sidecar's {expected}{extra}; "
            f"the file was replaced or changed since it was made: {fix}"
        )

    def __reduce__(self) -> tuple[Any, ...]:  # picklable across processes (devices workers, Ray)
        return (type(self), (self.path, self.expected, self.found, self.fix, self.detail))


def cache_dir() -> Path:
    """Where the persistent hash cache lives (see the module docstring)."""
    env = os.environ.get("ZSPLG_FAST_CACHE_DIR")
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "zsplg-fast"


def _key(path: Path) -> tuple[str, int, int, int, int]:
    st = os.stat(path)
    return (os.path.realpath(path), st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)


def _hash_file(path: Path) -> str:
    """Hex sha256 of the file's bytes (the one place that reads them; tests count its calls)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _read_cache() -> dict[str, Any]:
    try:
        data = json.loads((cache_dir() / CACHE_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict) or data.get("version") != CACHE_VERSION:
        return {}
    entries = data.get("entries")
    return entries if isinstance(entries, dict) else {}


def _write_cache(entries: Mapping[str, Any]) -> None:
    """Atomically replace the cache file; any failure is ignored (the cache is only a shortcut)."""
    folder = cache_dir()
    keep = sorted(entries.items(), key=lambda kv: -float(kv[1].get("at", 0)))[:CACHE_MAX_ENTRIES]
    with contextlib.suppress(OSError):
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{CACHE_FILE}.", suffix=".tmp", dir=folder)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump({"version": CACHE_VERSION, "entries": dict(keep)}, f)
            os.replace(tmp, folder / CACHE_FILE)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)


def _cached(key: tuple[str, int, int, int, int]) -> str | None:
    if key in _memo:
        return _memo[key]
    if key[1] < CACHE_MIN_BYTES:
        return None
    e = _read_cache().get(key[0])
    if isinstance(e, dict) and [e.get(k) for k in ("bytes", "mtime_ns", "ctime_ns", "ino")] == list(key[1:]):
        sha = e.get("sha256")
        if isinstance(sha, str) and len(sha) == 64:
            _memo[key] = sha
            return sha
    return None


def _remember(key: tuple[str, int, int, int, int], sha: str) -> None:
    _memo[key] = sha
    if key[1] < CACHE_MIN_BYTES:
        return
    entries = _read_cache()
    entries[key[0]] = dict(zip(("bytes", "mtime_ns", "ctime_ns", "ino"), key[1:], strict=True))
    entries[key[0]].update(sha256=sha, at=time.time())
    _write_cache(entries)


def file_sha256(path: str | Path) -> str:
    """Hex sha256 of ``path``'s bytes, from the cache when its (path, size, mtime, ctime, inode) match."""
    key = _key(Path(path))
    sha = _cached(key)
    if sha is None:
        sha = _hash_file(Path(path))
        if _key(Path(path)) == key:  # unchanged while it was read
            _remember(key, sha)
    return sha


def combined_sha256(shas: Iterable[str]) -> str:
    """sha256 of the files' hex sha256s, in order: the artifact's identity (sidecar ``sha256``)."""
    h = hashlib.sha256()
    for s in shas:
        h.update(s.encode())
    return h.hexdigest()


def file_records(paths: Iterable[str | Path], names: Iterable[str] | None = None) -> dict[str, Any]:
    """The sidecar's ``files`` block: ``{name: {"bytes": size, "sha256": hex}}`` for ``paths`` in order.

    ``names`` are the names the files will have beside their sidecar (default: each path's name; a
    writer hashing temp files gives the final names)."""
    ps = [Path(p) for p in paths]
    ns = list(names) if names is not None else [p.name for p in ps]
    return {n: {"bytes": p.stat().st_size, "sha256": file_sha256(p)} for n, p in zip(ns, ps, strict=True)}


def remember_records(folder: str | Path, records: Mapping[str, Any]) -> None:
    """Cache the hashes of ``records`` for the files now in ``folder`` (after the writer moved its temp
    files there), so the first load does not hash them again. A file whose size differs is skipped."""
    for name, rec in records.items():
        p = Path(folder) / name
        with contextlib.suppress(OSError, TypeError, KeyError):
            key = _key(p)
            if key[1] == rec["bytes"]:
                _remember(key, str(rec["sha256"]))


def _fix(side: Mapping[str, Any]) -> str:
    if side.get("rebuild_command"):
        return f"build it again: {side['rebuild_command']}"
    if isinstance(side.get("deploy"), Mapping):
        return "make the folder again with zsplg-fast deploy (or copy it again, whole)"
    return FIX_EXPORT


def _legacy_files(path: Path, side: Mapping[str, Any]) -> list[Path]:
    data = path.with_name(path.name + ".data")
    return [path, data] if side.get("external_data") or data.exists() else [path]


def _plain_name(name: Any) -> bool:
    return isinstance(name, str) and name not in ("", ".", "..") and "/" not in name and "\\" not in name


def verify_artifact(path: str | Path, side: Mapping[str, Any]) -> dict[str, Any]:
    """Check ``path`` (and its external data) against its sidecar ``side``; returns what was checked.

    Returns:
        ``{"status": "verified" | "size only" | "not recorded", "files": [names], "hashed": [names]}``;
        ``hashed`` lists the files read in full this time (the others came from the cache).
    Raises:
        ArtifactIntegrityError: a size or sha256 differs, a recorded file is missing, or the record
            is malformed (exit 2; the message names the file and the fix).
    """
    path = Path(path)
    fix = _fix(side)
    hashed: list[str] = []

    def sha(p: Path) -> str:
        if _cached(_key(p)) is None:
            hashed.append(p.name)
        return file_sha256(p)

    files = side.get("files")
    if isinstance(files, Mapping) and files:
        for i, (name, rec) in enumerate(files.items()):
            if not _plain_name(name) or not isinstance(rec, Mapping):
                raise ArtifactIntegrityError(path, "a file record", f"{name!r}: {rec!r}", fix, "malformed")
            # the first record is the model file itself (a copy under another name, with its sidecar,
            # stays valid); the others (external data) lie beside it under their recorded names
            p = path if i == 0 else path.parent / name
            want, size = str(rec.get("sha256")), rec.get("bytes")
            if not p.is_file():
                raise ArtifactIntegrityError(p, want, "no such file", fix, "listed by the sidecar")
            got_size = p.stat().st_size
            if got_size != size:
                raise ArtifactIntegrityError(p, want, sha(p), fix, f"{got_size} bytes, expected {size}")
            got = sha(p)
            if got != want:
                raise ArtifactIntegrityError(p, want, got, fix, f"{got_size} bytes, as expected")
        return {"status": "verified", "files": [path.name, *list(files)[1:]], "hashed": hashed}
    parts = _legacy_files(path, side)
    size, want = side.get("size_bytes"), side.get("sha256")
    if not isinstance(want, str) and not isinstance(size, int):
        return {"status": "not recorded", "files": [p.name for p in parts], "hashed": hashed}
    for p in parts:
        if not p.is_file():
            raise ArtifactIntegrityError(p, str(side.get("sha256")), "no such file", fix)
    got_size = sum(p.stat().st_size for p in parts)
    if isinstance(want, str):
        got = combined_sha256(sha(p) for p in parts)
        if got != want or (isinstance(size, int) and size != got_size):
            detail = "sha256 over the files' sha256s"
            if isinstance(size, int) and size != got_size:
                detail += f"; {got_size} bytes, expected {size}"
            raise ArtifactIntegrityError(parts[0], want, got, fix, detail)
        return {"status": "verified", "files": [p.name for p in parts], "hashed": hashed}
    if size != got_size:
        raise ArtifactIntegrityError(
            parts[0], "not recorded", sha(parts[0]), fix, f"{got_size} bytes, expected {size}"
        )
    return {"status": "size only", "files": [p.name for p in parts], "hashed": hashed}


def describe(result: Mapping[str, Any]) -> str:
    """One line for ``inspect``: what :func:`verify_artifact` checked."""
    names = ", ".join(result.get("files", []))
    status = result.get("status")
    if status == "verified":
        how = "hashed now" if result.get("hashed") else "cached hash, same size/mtime/ctime/inode"
        return f"integrity: ok, size and sha256 match the sidecar ({names}; {how})"
    if status == "size only":
        return f"integrity: size matches ({names}); the sidecar records no sha256 (build it again to add one)"
    return f"integrity: not checked, the sidecar records no size or sha256 ({names})"
