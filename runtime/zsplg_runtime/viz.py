"""Pictures people would rather look at than read: overlays with a class legend, and sample grids.

Data-level helpers (numpy + PIL only; they import nothing above ``data``), so the label job, evaluation,
``infer`` and the benchmark can all use them:

- :func:`overlay`: an image blended with its colour mask, with a legend of the classes it shows;
- :func:`grid`: N samples, one per row: image | prediction | ground truth, with a shared legend;
- :func:`write_overlay` / :func:`write_grid`: the same, written as PNG atomically.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TypeVar

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from zsplg_runtime.errors import ConfigError, LabelFormatError
from zsplg_runtime.io import atomic_write_with
from zsplg_runtime.labels import IGNORE_INDEX, VOC_PALETTE, colorize

T = TypeVar("T")
IGNORE_RGB = (255, 255, 255)  # ignore pixels in a colour mask: white, as VOC's boundary colour
_PAD = 4
_ROW = 16  # legend / title line height in pixels


@dataclass
class GridItem:
    """One row of a grid. image: (H, W, 3) uint8 RGB; pred, gt: (H, W) uint8 class maps (255 = ignore)."""

    image: np.ndarray
    pred: np.ndarray
    gt: np.ndarray | None = None
    title: str = ""


def pick(items: Sequence[T], n: int) -> list[T]:
    """``n`` items spread evenly over ``items`` (all of them when there are fewer), in order."""
    if n < 1:
        raise ConfigError("overlays", n, "need at least one sample", valid=">= 1")
    if len(items) <= n:
        return list(items)
    idx = np.linspace(0, len(items) - 1, n).round().astype(int)
    return [items[i] for i in idx.tolist()]  # len(items) > n: steps >= 1, so no index repeats


def full_palette(palette: np.ndarray | Sequence[Sequence[int]] | None) -> np.ndarray:
    """(256, 3) uint8: ``palette`` (e.g. a sidecar's C colours) padded with the VOC palette; None = VOC."""
    pal = VOC_PALETTE if palette is None else np.asarray(palette, dtype=np.uint8).reshape(-1, 3)
    if len(pal) < 256:  # a sidecar palette lists only the C classes: pad to 256 entries
        pal = np.concatenate([pal, VOC_PALETTE[len(pal) :]])
    return pal


def _check(image: np.ndarray, label: np.ndarray, what: str) -> None:
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise LabelFormatError("<image>", f"{what}: image must be (H, W, 3) uint8, got {image.shape}")
    if label.shape != image.shape[:2]:
        raise LabelFormatError(
            "<label>", f"{what}: label {label.shape} does not match image {image.shape[:2]}"
        )


def colour_mask(label: np.ndarray, palette: np.ndarray | Sequence[Sequence[int]] | None = None) -> np.ndarray:
    """(H, W) class map → (H, W, 3) uint8 RGB; ignore (255) pixels are white."""
    rgb = colorize(np.asarray(label), full_palette(palette))
    rgb[np.asarray(label) == IGNORE_INDEX] = IGNORE_RGB
    return rgb


def blend(
    image: np.ndarray,
    label: np.ndarray,
    palette: np.ndarray | Sequence[Sequence[int]] | None = None,
    alpha: float = 0.5,
) -> np.ndarray:
    """image (H, W, 3) uint8 blended with the colour of ``label`` (H, W); ignore pixels are left as is.

    ``alpha`` in [0, 1] is the weight of the colour mask. Returns (H, W, 3) uint8.
    """
    _check(image, label, "blend")
    colours = colorize(label, full_palette(palette)).astype(np.float32)
    out = image.astype(np.float32) * (1 - alpha) + colours * alpha
    keep = label == IGNORE_INDEX
    out[keep] = image[keep]
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def _font() -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=12)
    except TypeError:  # Pillow < 10.1
        return ImageFont.load_default()


def legend(
    class_names: Sequence[str],
    indices: Sequence[int],
    width: int,
    palette: np.ndarray | Sequence[Sequence[int]] | None = None,
) -> np.ndarray:
    """A legend strip (h, ``width``, 3) uint8: a colour swatch and name per class index, wrapped in rows."""
    pal, font = full_palette(palette), _font()
    entries = []
    for i in indices:
        name = class_names[i] if 0 <= i < len(class_names) else ("ignore" if i == IGNORE_INDEX else str(i))
        colour = IGNORE_RGB if i == IGNORE_INDEX else tuple(int(c) for c in pal[i])
        entries.append((colour, f"{i} {name}", int(font.getlength(f"{i} {name}")) + _ROW + 3 * _PAD))
    rows: list[list[tuple[tuple[int, ...], str, int]]] = [[]]
    used = 0
    for e in entries:
        if rows[-1] and used + e[2] > width:
            rows.append([])
            used = 0
        rows[-1].append(e)
        used += e[2]
    img = Image.new("RGB", (width, len(rows) * (_ROW + _PAD) + _PAD), (255, 255, 255))
    draw = ImageDraw.Draw(img)
    for r, row in enumerate(rows):
        x, y = _PAD, _PAD + r * (_ROW + _PAD)
        for colour, text, w in row:
            draw.rectangle([x, y, x + _ROW - 2, y + _ROW - 2], fill=colour, outline=(0, 0, 0))
            draw.text((x + _ROW + _PAD, y + 1), text, fill=(0, 0, 0), font=font)
            x += w
    return np.asarray(img)


def present_classes(*labels: np.ndarray | None) -> list[int]:
    """Sorted class values found in the given label maps (ignore included if present)."""
    found: set[int] = set()
    for lab in labels:
        if lab is not None:
            found.update(int(v) for v in np.unique(lab))
    return sorted(found)


def overlay(
    image: np.ndarray,
    label: np.ndarray,
    class_names: Sequence[str],
    palette: np.ndarray | Sequence[Sequence[int]] | None = None,
    alpha: float = 0.5,
) -> np.ndarray:
    """The blended image (H, W, 3) with a legend of the classes present stacked below: (H + h, W, 3) uint8."""
    mixed = blend(image, label, palette, alpha)
    strip = legend(class_names, present_classes(label), image.shape[1], palette)
    return np.concatenate([mixed, strip], axis=0)


def _fit(rgb: np.ndarray, cell: int, nearest: bool) -> Image.Image:
    """Letterbox ``rgb`` into a cell×cell white square, keeping the aspect ratio."""
    h, w = rgb.shape[:2]
    s = cell / max(h, w)
    size = (max(1, round(w * s)), max(1, round(h * s)))
    img = Image.fromarray(rgb).resize(size, Image.NEAREST if nearest else Image.BILINEAR)
    canvas = Image.new("RGB", (cell, cell), (255, 255, 255))
    canvas.paste(img, ((cell - size[0]) // 2, (cell - size[1]) // 2))
    return canvas


def grid(
    items: Sequence[GridItem],
    class_names: Sequence[str],
    palette: np.ndarray | Sequence[Sequence[int]] | None = None,
    cell: int = 256,
) -> np.ndarray:
    """One row per item: image | prediction | ground truth (when any item has one), a title line per row,
    column headers, and one legend for every class shown. Returns (H, W, 3) uint8."""
    if not items:
        raise LabelFormatError("<grid>", "no samples to draw")
    has_gt = any(it.gt is not None for it in items)
    heads = ["image", "prediction", *(["ground truth"] if has_gt else [])]
    width = len(heads) * (cell + _PAD) + _PAD
    row_h = _ROW + cell + _PAD
    canvas = Image.new("RGB", (width, _ROW + _PAD + len(items) * row_h), (255, 255, 255))
    draw, font = ImageDraw.Draw(canvas), _font()
    for c, head in enumerate(heads):
        draw.text((_PAD + c * (cell + _PAD), 2), head, fill=(0, 0, 0), font=font)
    shown: list[np.ndarray | None] = []
    for r, it in enumerate(items):
        _check(it.image, it.pred, f"grid row {r}")
        if it.gt is not None and it.gt.shape != it.pred.shape:
            raise LabelFormatError(
                "<grid>", f"row {r}: ground truth {it.gt.shape} vs prediction {it.pred.shape}"
            )
        y = _ROW + _PAD + r * row_h
        draw.text((_PAD, y), it.title[:80], fill=(60, 60, 60), font=font)
        cells = [_fit(it.image, cell, False), _fit(colour_mask(it.pred, palette), cell, True)]
        if has_gt:
            gt = it.gt if it.gt is not None else np.full_like(it.pred, IGNORE_INDEX)
            cells.append(_fit(colour_mask(gt, palette), cell, True))
        for c, im in enumerate(cells):
            canvas.paste(im, (_PAD + c * (cell + _PAD), y + _ROW))
        shown += [it.pred, it.gt]
    strip = legend(class_names, present_classes(*shown), width, palette)
    return np.concatenate([np.asarray(canvas), strip], axis=0)


def _write_png(path: str | Path, rgb: np.ndarray) -> Path:
    img = Image.fromarray(rgb)

    def save(f: IO[bytes]) -> None:
        img.save(f, format="PNG")

    atomic_write_with(path, save)
    return Path(path)


def write_overlay(
    path: str | Path,
    image: np.ndarray,
    label: np.ndarray,
    class_names: Sequence[str],
    palette: np.ndarray | Sequence[Sequence[int]] | None = None,
    alpha: float = 0.5,
) -> Path:
    """Write :func:`overlay` as a PNG (atomically). Returns the path."""
    return _write_png(path, overlay(image, label, class_names, palette, alpha))


def write_grid(
    path: str | Path,
    items: Sequence[GridItem],
    class_names: Sequence[str],
    palette: np.ndarray | Sequence[Sequence[int]] | None = None,
    cell: int = 256,
) -> Path:
    """Write :func:`grid` as a PNG (atomically). Returns the path."""
    return _write_png(path, grid(items, class_names, palette, cell))
