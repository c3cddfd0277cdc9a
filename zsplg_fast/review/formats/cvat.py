"""CVAT "Segmentation Mask 1.1": a zip in the PASCAL VOC segmentation layout, as CVAT documents it.

Layout (follows CVAT's format docs and datumaro's ``voc_segmentation`` reader)::

    labelmap.txt                       # label:color_rgb:parts:actions, one line per label
    ImageSets/Segmentation/default.txt # image ids
    SegmentationClass/<id>.png         # class colours from labelmap.txt
    SegmentationObject/<id>.png        # one index per SAM mask (visible part), when meta has the masks

Every class is declared with its VOC colour, background included, and so is ``ignore`` (255, VOC's
void colour 224,224,192): CVAT never meets an undeclared colour (cvat#7847, cvat#6269).
"""

from __future__ import annotations

import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from zsplg_fast.data import VOC_PALETTE, write_label
from zsplg_fast.errors import DatasetError
from zsplg_fast.review.folder import IGNORE, IGNORE_NAME, class_names_with_ignore, visible_masks
from zsplg_fast.review.formats.base import ExportContext, Format, ImportContext
from zsplg_fast.review.safezip import safe_extract
from zsplg_fast.utils.io import atomic_path, atomic_write_text

ARCHIVE = "segmentation_mask.zip"
MAX_INSTANCES = 254  # SegmentationObject is 8-bit; 0 = none, 255 = void


def labelmap_text(classes: list[str]) -> str:
    """``labelmap.txt``: every class with its VOC colour, background first, then ``ignore``."""
    lines = ["# label:color_rgb:parts:actions"]
    for v, name in class_names_with_ignore(classes).items():
        r, g, b = (int(c) for c in VOC_PALETTE[v])
        lines.append(f"{name}:{r},{g},{b}::")
    return "\n".join(lines) + "\n"


def parse_labelmap(path: Path, archive: Path) -> dict[str, tuple[int, int, int]]:
    """``labelmap.txt`` → {label name: (r, g, b)}. Raises DatasetError naming the archive."""
    out: dict[str, tuple[int, int, int]] = {}
    for n, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        parts = line.split(":")
        try:
            rgb = tuple(int(c) for c in parts[1].split(","))
        except (IndexError, ValueError) as e:
            raise DatasetError(archive, f"labelmap.txt line {n} is not 'name:r,g,b::' ({line!r})") from e
        if len(rgb) != 3:
            raise DatasetError(archive, f"labelmap.txt line {n}: colour {parts[1]!r} is not r,g,b")
        out[parts[0]] = rgb  # type: ignore[assignment]
    return out


def _object_map(label: np.ndarray, meta: dict[str, Any]) -> np.ndarray | None:
    parts = visible_masks(label, meta)
    if parts is None:
        return None
    obj = np.zeros(label.shape, np.uint8)
    for i, (_, _, vis) in enumerate(parts):  # past 254 masks the last index is shared (8-bit PNG)
        obj[vis] = min(i + 1, MAX_INSTANCES)
    obj[label == IGNORE] = IGNORE
    return obj


def export_cvat(ctx: ExportContext) -> dict[str, Any]:
    """Write ``ctx.out/segmentation_mask.zip``; returns counts."""
    with tempfile.TemporaryDirectory(prefix=".cvat-", dir=ctx.out) as tmp:
        root = Path(tmp)
        atomic_write_text(root / "labelmap.txt", labelmap_text(ctx.folder.classes))
        atomic_write_text(
            root / "ImageSets" / "Segmentation" / "default.txt", "".join(f"{it.id}\n" for it in ctx.items)
        )
        objects = 0
        for it in ctx.items:
            label = it.label()
            write_label(root / "SegmentationClass" / f"{it.id}.png", label)
            obj = _object_map(label, it.meta())
            if obj is not None:
                write_label(root / "SegmentationObject" / f"{it.id}.png", obj)
                objects += 1
        if objects < len(ctx.items):
            ctx.notes.append(
                f"SegmentationObject/ written for {objects} of {len(ctx.items)} images: the others' meta "
                "lacks the SAM masks ('rle'); relabel with this version to get instances"
            )
        with (
            atomic_path(ctx.out / ARCHIVE) as tmp_zip,
            zipfile.ZipFile(tmp_zip, "w", zipfile.ZIP_DEFLATED) as zf,
        ):
            for p in sorted(root.rglob("*")):
                if p.is_file():
                    zf.write(p, p.relative_to(root).as_posix())
    return {"archive": ARCHIVE, "images": len(ctx.items), "object_maps": objects}


def _lookup(
    colours: dict[str, tuple[int, int, int]], classes: list[str], archive: Path, check_order: bool
) -> dict[int, int]:
    names = class_names_with_ignore(classes)
    missing = [n for v, n in names.items() if v != IGNORE and n not in colours]
    if missing:
        raise DatasetError(
            archive,
            f"labelmap.txt lacks class(es) {missing}; it declares {sorted(colours)}. "
            "Export with this tool's labelmap, or add the classes in CVAT before exporting",
        )
    extra = [n for n in colours if n not in names.values()]
    if extra:
        raise DatasetError(
            archive, f"labelmap.txt declares label(s) {extra} that are not among the classes {classes}"
        )
    order = [n for n in colours if n != IGNORE_NAME]
    if order != classes:
        raise DatasetError(
            archive,
            f"labelmap.txt lists the classes in another order ({order}) than the label folder's "
            f"manifest ({classes}); pass the folder it was exported from to --classes, or fix the order",
        )
    by_name = {n: v for v, n in names.items()}
    return {(r << 16) | (g << 8) | b: by_name[n] for n, (r, g, b) in colours.items()}


def decode_class_png(path: Path, lut: dict[int, int], archive: Path) -> np.ndarray:
    """An RGB or palette class PNG → (H, W) uint8 label through the labelmap colours."""
    try:
        with Image.open(path) as im:
            if im.format != "PNG":
                raise DatasetError(archive, f"{path.name}: content is {im.format}, not PNG")
            rgb = np.asarray(im.convert("RGB"), dtype=np.uint32)
    except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError) as e:
        raise DatasetError(archive, f"{path.name}: not a readable PNG ({type(e).__name__}: {e})") from e
    packed = (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]
    uniq, inv = np.unique(packed, return_inverse=True)
    unknown = [f"{(u >> 16) & 255},{(u >> 8) & 255},{u & 255}" for u in uniq.tolist() if u not in lut]
    if unknown:
        raise DatasetError(
            archive, f"{path.name}: colour(s) {unknown[:5]} are not in labelmap.txt (undeclared label)"
        )
    values = np.array([lut[u] for u in uniq.tolist()], np.uint8)
    return values[inv].reshape(packed.shape)


def import_cvat(ctx: ImportContext) -> Iterator[tuple[str, np.ndarray]]:
    """Yield (id, label) from a Segmentation Mask 1.1 zip (or an already extracted folder)."""
    src = ctx.source
    if src.is_dir():
        root = src
    else:
        root = ctx.scratch / "cvat"
        safe_extract(src, root)
    lm = next(iter(sorted(root.rglob("labelmap.txt"))), None)
    if lm is None:
        raise DatasetError(src, "has no labelmap.txt: not a CVAT Segmentation Mask 1.1 export")
    base = lm.parent
    lut = _lookup(parse_labelmap(lm, src), ctx.classes, src, ctx.check_order)
    cls_dir = base / "SegmentationClass"
    pngs = sorted(p for p in cls_dir.rglob("*.png") if p.is_file()) if cls_dir.is_dir() else []
    if not pngs:
        raise DatasetError(src, "has no SegmentationClass/*.png")
    for p in pngs:
        sid = p.relative_to(cls_dir).with_suffix("").as_posix()
        if ctx.known_ids is not None and sid not in ctx.known_ids:  # as the other importers
            raise DatasetError(
                src, f"SegmentationClass/ holds image {sid!r}, which is not in the label folder"
            )
        yield sid, decode_class_png(p, lut, src)


FORMAT = Format("cvat", "CVAT (Segmentation Mask 1.1 zip)", export_cvat, import_cvat)
