"""UniMatch-style split files.

Each non-empty line is ``IMAGE [LABEL]``, paths relative to the dataset root and separated by one
space, e.g. ``JPEGImages/2007_000032.jpg SegmentationClass/2007_000032.png``; an unlabeled line has
only the image. Lines starting with ``#`` are comments. The usual names are :data:`SPLIT_NAMES`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from zsplg_fast.data.labels import non_png_label
from zsplg_fast.errors import DatasetError
from zsplg_fast.utils.io import atomic_write_text, refuse_overwrite

LABELED, UNLABELED, VAL = "labeled.txt", "unlabeled.txt", "val.txt"
SPLIT_NAMES: tuple[str, ...] = (LABELED, UNLABELED, VAL)


@dataclass(frozen=True)
class SplitEntry:
    """One line of a split file: ``image`` and optional ``label`` as written (root-relative, '/'),
    and ``line``, its 1-based line number (0 when not read from a file)."""

    image: str
    label: str | None = None
    line: int = 0


def read_split(path: str | Path, root: str | Path | None = None) -> list[SplitEntry]:
    """Parse a split file.

    Args:
        path: the split file.
        root: dataset root; when given, every referenced file must exist under it.

    Returns:
        Entries in file order.

    Raises:
        DatasetError: missing/unreadable split file, a line with more than two fields, or (with
            ``root``) a referenced file that does not exist; names the split file and the line.
    """
    p = Path(path)
    if not p.is_file():
        raise DatasetError(p, "split file not found")
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise DatasetError(p, f"cannot read split file ({type(e).__name__}: {e})") from e
    out: list[SplitEntry] = []
    for n, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        fields = line.split()
        if len(fields) > 2:
            raise DatasetError(p, f"line {n}: expected 'IMAGE [LABEL]', got {len(fields)} fields: {line!r}")
        entry = SplitEntry(fields[0], fields[1] if len(fields) == 2 else None, n)
        if root is not None:
            resolve_entry(entry, root, p)
        out.append(entry)
    return out


def is_file(path: Path) -> bool:
    """``path.is_file()``, False (not an OSError) where the name cannot exist: too long for the filesystem
    (ENAMETOOLONG), a NUL byte, a component that is a file. Split lines name files as the user wrote them."""
    try:
        return path.is_file()
    except (OSError, ValueError):
        return False


def resolve_entry(entry: SplitEntry, root: str | Path, split_file: str | Path) -> tuple[Path, Path | None]:
    """(image, label) paths of ``entry`` under ``root``; DatasetError naming file and line if missing."""
    r = Path(root)
    image = r / entry.image
    label = r / entry.label if entry.label is not None else None
    for rel, full in ((entry.image, image), (entry.label, label)):
        if full is not None and not is_file(full):
            beside = non_png_label(full) if full is label else None
            hint = f"; found {beside.name} beside it: labels must be PNG" if beside is not None else ""
            raise DatasetError(split_file, f"line {entry.line}: '{rel}' not found under {r}{hint}")
    return image, label


def _rel(p: str | Path, root: Path | None) -> str:
    path = Path(p)
    if root is not None and path.is_absolute():
        try:
            path = path.relative_to(root)
        except ValueError as e:
            raise DatasetError(path, f"is not under the dataset root {root}") from e
    s = path.as_posix()
    if any(c.isspace() for c in s):
        raise DatasetError(path, "split files are space-separated; rename files whose path has whitespace")
    return s


def write_split(
    path: str | Path,
    entries: Iterable[SplitEntry | Sequence[str | Path | None] | str | Path],
    *,
    root: str | Path | None = None,
    force: bool = False,
) -> int:
    """Write a split file atomically; returns the number of lines.

    Args:
        path: destination, e.g. ``ROOT/labeled.txt``.
        entries: :class:`SplitEntry`, ``(image, label_or_None)`` pairs, or bare image paths.
        root: when given, absolute paths are made relative to it (and must lie under it).
        force: replace an existing file (otherwise OutputExistsError).

    Raises:
        DatasetError: a path with whitespace, or outside ``root``.
    """
    refuse_overwrite(path, force=force)
    r = Path(root) if root is not None else None
    lines = []
    for e in entries:
        if isinstance(e, SplitEntry):
            image, label = e.image, e.label
        elif isinstance(e, (str, Path)):
            image, label = e, None
        else:
            image, label = e[0], e[1] if len(e) > 1 else None
        if image is None:
            raise DatasetError(path, "a split entry has no image path")
        parts = [_rel(image, r)] + ([_rel(label, r)] if label is not None else [])
        lines.append(" ".join(parts))
    atomic_write_text(path, "".join(line + "\n" for line in lines))
    return len(lines)


def find_split(split: str | Path, root: str | Path, extra_dirs: Sequence[str] = ()) -> Path:
    """Locate a split given as a path or a name.

    Tried in order: ``split`` as given; ``ROOT/split``; ``ROOT/split.txt``; ``ROOT/splits/split[.txt]``;
    then ``ROOT/<d>/split[.txt]`` for each of ``extra_dirs`` (e.g. ``ImageSets/Segmentation``).

    Raises:
        DatasetError: none exists (lists what was tried).
    """
    r, s = Path(root), str(split)
    names = [s] if s.endswith(".txt") else [s, f"{s}.txt"]
    tried = [Path(split)]
    for d in ("", "splits", *extra_dirs):
        tried += [r / d / n if d else r / n for n in names]
    for cand in tried:
        if is_file(cand):
            return cand
    raise DatasetError(split, "split file not found; tried " + ", ".join(str(t) for t in tried))
