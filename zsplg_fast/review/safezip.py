"""Safe archive extraction: no zip slip, no links, no member past a size cap.

Every member name is checked before anything is written: absolute paths, drive letters, ``..`` parts and
symbolic links are refused, and so is a member (or the archive in total) that would unpack past the cap.
Sizes are counted while streaming, so a header that lies about ``file_size`` cannot get past the cap.
"""

from __future__ import annotations

import stat
import zipfile
import zlib
from pathlib import Path, PurePosixPath

from zsplg_fast.errors import DatasetError

MAX_MEMBER_BYTES = 256 << 20
MAX_TOTAL_BYTES = 8 << 30
_CHUNK = 1 << 20
_NAME_MAX = 255  # bytes per path component on Linux / macOS filesystems


def _check_name(archive: Path, name: str) -> PurePosixPath:
    norm = name.replace("\\", "/")
    p = PurePosixPath(norm)
    if norm.startswith("/") or p.is_absolute() or (len(norm) > 1 and norm[1] == ":"):
        raise DatasetError(archive, f"member {name!r} has an absolute path; refusing to extract (zip slip)")
    if ".." in p.parts:
        raise DatasetError(archive, f"member {name!r} climbs out with '..'; refusing to extract (zip slip)")
    return p


def safe_extract(
    archive: str | Path,
    dest: str | Path,
    max_member_bytes: int = MAX_MEMBER_BYTES,
    max_total_bytes: int = MAX_TOTAL_BYTES,
) -> list[Path]:
    """Extract the zip ``archive`` into ``dest``; returns the files written.

    Raises:
        DatasetError: not a zip or a damaged one, a member with an absolute path or '..', a symbolic
            link, a member / total past the caps, a name listed twice, a file member that another needs as
            its folder, or a name part too long for the filesystem (names the archive and the member).
    """
    src = Path(archive)
    if not zipfile.is_zipfile(src):
        raise DatasetError(src, "is not a zip archive")
    try:
        return _extract(src, Path(dest), max_member_bytes, max_total_bytes)
    except _CORRUPT as e:  # a damaged archive: bad CRC, bad header, truncated deflate stream, encrypted
        raise DatasetError(src, f"is a damaged zip archive ({type(e).__name__}: {e})") from e


# what zipfile raises on a damaged or unsupported archive (none is an OSError)
_CORRUPT = (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, RuntimeError, UnicodeDecodeError)


def _extract(src: Path, root: Path, max_member_bytes: int, max_total_bytes: int) -> list[Path]:
    written: list[Path] = []
    total = 0
    with zipfile.ZipFile(src) as zf:
        infos = zf.infolist()
        files: set[PurePosixPath] = set()
        for info in infos:  # check every name before writing anything
            rel = _check_name(src, info.filename)
            if not info.is_dir():
                if rel in files or not rel.parts:
                    raise DatasetError(src, f"member {info.filename!r} is listed twice or has no name")
                files.add(rel)
            if stat.S_ISLNK(info.external_attr >> 16):
                raise DatasetError(src, f"member {info.filename!r} is a symbolic link; refusing to extract")
            if info.file_size > max_member_bytes:
                raise DatasetError(
                    src,
                    f"member {info.filename!r} unpacks to {info.file_size} bytes, over the cap of "
                    f"{max_member_bytes}",
                )
        for rel in files:  # a file that another member needs as its folder ('a.png' and 'a.png/b')
            clash = next((d for d in rel.parents if d in files), None)
            if clash is not None:
                raise DatasetError(
                    src, f"member {rel.as_posix()!r} lies inside member file {clash.as_posix()!r}"
                )
            if any(len(part.encode()) > _NAME_MAX for part in rel.parts):
                raise DatasetError(
                    src, f"member {rel.as_posix()[:80]!r}...: a name part over {_NAME_MAX} bytes"
                )
        root.mkdir(parents=True, exist_ok=True)
        base = root.resolve()
        for info in infos:
            rel = _check_name(src, info.filename)
            target = (base / rel).resolve()
            if base != target and base not in target.parents:
                raise DatasetError(src, f"member {info.filename!r} resolves outside {root}; refusing")
            if info.is_dir():
                if target.is_file():  # 'a/' after a file 'a'
                    raise DatasetError(src, f"member {info.filename!r} is a folder and a file")
                target.mkdir(parents=True, exist_ok=True)
                continue
            if target.is_dir():  # 'a/' before a file 'a'
                raise DatasetError(src, f"member {info.filename!r} is a folder and a file")
            target.parent.mkdir(parents=True, exist_ok=True)
            size = 0
            with zf.open(info) as fin, open(target, "wb") as fout:
                while chunk := fin.read(_CHUNK):
                    size += len(chunk)
                    total += len(chunk)
                    if size > max_member_bytes or total > max_total_bytes:
                        fout.close()
                        target.unlink(missing_ok=True)
                        raise DatasetError(
                            src,
                            f"member {info.filename!r} unpacks past the size cap "
                            f"({max_member_bytes} per member, {max_total_bytes} in total); refusing",
                        )
                    fout.write(chunk)
            written.append(target)
    return written
