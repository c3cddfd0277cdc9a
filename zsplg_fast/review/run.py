"""``labels export`` / ``labels import`` as library calls."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from zsplg_fast.data import write_label
from zsplg_fast.data.labels import check_values
from zsplg_fast.errors import ConfigError, DatasetError, LabelFormatError
from zsplg_fast.review.folder import IGNORE, LabelFolder
from zsplg_fast.review.formats import FORMATS, ExportContext, ImportContext
from zsplg_fast.review.order import select
from zsplg_fast.utils.io import atomic_write_json
from zsplg_fast.utils.outdir import check_replaceable, json_with, move_into_place, write_marker

EXPORT_COMMAND, IMPORT_COMMAND = "labels export", "labels import"
# folders written before markers existed: their summary JSON with our keys
EXPORT_LEGACY = (json_with("export.json", "format", "tool", "images", "of"),)
IMPORT_LEGACY = (json_with("import.json", "format", "imported", "kept_from_base"),)


def _format(name: str, need_import: bool = False) -> Any:
    fmt = FORMATS.get(name)
    valid = [n for n, f in FORMATS.items() if f.importer is not None or not need_import]
    if fmt is None or (need_import and fmt.importer is None):
        raise ConfigError(
            "--format", name, "unknown" if fmt is None else "export only", valid=", ".join(valid)
        )
    return fmt


def export_labels(
    labels_dir: str | Path,
    fmt: str,
    out: str | Path,
    review: int | None = None,
    image_prefix: str = "/data/local-files/?d=",
    model_version: str = "zsplg-fast",
    force: bool = False,
) -> dict[str, Any]:
    """Write the label folder (or its ``review`` images most in need of review) as ``fmt`` into ``out``.

    ``out`` must be new or empty, or (with ``force``) a previous ``labels export`` folder, which is
    replaced; anything else is refused (:mod:`zsplg_fast.utils.outdir`). It is built in a temp folder
    beside it and renamed when complete. Returns the summary also written to ``out/export.json``
    (counts, degraded fields, polygon IoU; file names relative to ``out``).
    """
    f = _format(fmt)
    folder = LabelFolder(labels_dir)
    dst = Path(out)
    check_replaceable(dst, EXPORT_COMMAND, force, legacy=EXPORT_LEGACY)
    dst.parent.mkdir(parents=True, exist_ok=True)
    items = select(folder, review)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dst.name}.", suffix=".tmpdir", dir=dst.parent))
    try:
        write_marker(tmp, EXPORT_COMMAND)
        ctx = ExportContext(folder, items, tmp, image_prefix=image_prefix, model_version=model_version)
        missing = folder.missing_fields()
        if missing:
            ctx.notes.append(
                f"meta lacks {missing} (an older version's labels, or imported ones); exported what it has"
            )
        figures = f.exporter(ctx)
        summary = {
            "format": f.name,
            "tool": f.tool,
            "labels": str(folder.root),
            "images": len(items),
            "of": len(folder),
            "review": review,
            "classes": folder.classes,
            "missing_fields": missing,
            "notes": ctx.notes,
            **figures,
        }
        atomic_write_json(tmp / "export.json", summary)
        move_into_place(tmp, dst, EXPORT_COMMAND, force, legacy=EXPORT_LEGACY)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return summary


def resolve_classes(spec: str) -> tuple[list[str], LabelFolder | None]:
    """``--classes``: a label folder (its manifest), a classes file (one per line, '|' synonyms), or a
    comma list. Returns (class names, the folder when one was given)."""
    p = Path(spec)
    if (p / "manifest.json").is_file():
        folder = LabelFolder(p)
        return folder.classes, folder
    if p.is_file():
        lines = [ln.split("|")[0].strip() for ln in p.read_text(encoding="utf-8").splitlines()]
        names = [n for n in lines if n]
    else:
        names = [n.strip() for n in spec.split(",") if n.strip()]
    if len(names) < 2:
        raise ConfigError(
            "--classes", spec, "needs a label folder, a classes file or a comma list of 2+ names"
        )
    return names, None


def import_labels(
    fmt: str,
    source: str | Path,
    classes: str,
    out: str | Path,
    image_prefix: str = "/data/local-files/?d=",
    uncovered: str | None = None,
    force: bool = False,
) -> dict[str, Any]:
    """Turn corrected annotations into a label folder ``out`` (``labels/<id>.png``, ``manifest.json``).

    ``out`` must be new or empty, or (with ``force``) a previous ``labels import`` folder, which is
    replaced; anything else is refused (:mod:`zsplg_fast.utils.outdir`).

    With ``classes`` a label folder, its class order is the reference, image ids are checked against it,
    and the images the source does not hold keep that folder's labels (so ``out`` is complete for
    ``train``). Raises DatasetError naming the file on a class or image mismatch.
    """
    f = _format(fmt, need_import=True)
    src = Path(source)
    if not src.exists():
        raise DatasetError(src, "not found")
    if uncovered not in (None, "background", "ignore"):
        raise ConfigError("--uncovered", uncovered, "unknown", valid="background, ignore")
    names, base = resolve_classes(classes)
    dst = Path(out)
    check_replaceable(dst, IMPORT_COMMAND, force, legacy=IMPORT_LEGACY)
    fill_mode = uncovered or (base.uncovered if base else "background")
    fill = IGNORE if fill_mode == "ignore" else 0
    known = {it.id for it in base} if base else None
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dst.name}.", suffix=".tmpdir", dir=dst.parent))
    try:
        write_marker(tmp, IMPORT_COMMAND)
        imported: list[str] = []
        with tempfile.TemporaryDirectory(prefix=".import-", dir=dst.parent) as scratch:
            ctx = ImportContext(
                src, names, known, fill, Path(scratch), image_prefix=image_prefix, check_order=base is None
            )
            for sid, label in f.importer(ctx):
                label = _checked(sid, label, base, fill, names, src)
                write_label(tmp / "labels" / f"{sid}.png", label)
                imported.append(sid)
        if not imported:
            raise DatasetError(src, "holds no image labels to import")
        kept = 0
        if base is not None:
            done = set(imported)
            for it in base:
                if it.id not in done:
                    (tmp / "labels" / f"{it.id}.png").parent.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(it.label_path, tmp / "labels" / f"{it.id}.png")
                    kept += 1
        manifest = {
            "version": 1,
            "classes": names,
            "imported_from": {"format": f.name, "source": str(src.resolve())},
            "base": str(base.root.resolve()) if base else None,
            "config": {"classify": {"uncovered": fill_mode}},
        }
        if base is not None:
            manifest["fingerprint"] = f"import:{base.manifest.get('fingerprint', '')}"
        atomic_write_json(tmp / "manifest.json", manifest)
        summary = {"format": f.name, "imported": len(imported), "kept_from_base": kept, "out": str(dst)}
        atomic_write_json(tmp / "import.json", summary)
        move_into_place(tmp, dst, IMPORT_COMMAND, force, legacy=IMPORT_LEGACY)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return summary


def _checked(
    sid: str, label: np.ndarray | None, base: LabelFolder | None, fill: int, names: list[str], src: Path
) -> np.ndarray:
    parts = sid.split("/")
    if not sid or sid.startswith("/") or ".." in parts or "\\" in sid:
        raise DatasetError(src, f"image id {sid!r} is not a relative name; refusing to write it")
    item = base.get(sid) if base else None
    if label is None:
        if item is None:
            raise DatasetError(src, f"image {sid!r} has no shapes and no label folder gives its size")
        label = np.full(item.label().shape, fill, np.uint8)
    if item is not None:
        ref = item.label().shape
        if label.shape != ref:
            raise LabelFormatError(
                src, f"image {sid!r}: imported label is {label.shape}, the folder's is {ref}"
            )
    check_values(label, len(names), f"{src} ({sid})")
    return label
