"""Label maps: (H, W) uint8 class indices, 255 = ignore, stored as palette PNGs with the VOC palette."""

from __future__ import annotations

import glob
from collections.abc import Sequence
from pathlib import Path
from typing import IO

import numpy as np
from PIL import Image, ImageFile, UnidentifiedImageError

from zsplg_runtime.errors import LabelFormatError
from zsplg_runtime.io import atomic_write_with

IGNORE_INDEX = 255


def _voc_palette() -> np.ndarray:
    """The standard PASCAL VOC colour map: bits of the index interleaved into R, G, B (MSB first)."""
    pal = np.zeros((256, 3), np.uint8)
    for i in range(256):
        c, rgb = i, [0, 0, 0]
        for j in range(8):
            for ch in range(3):
                rgb[ch] |= ((c >> ch) & 1) << (7 - j)
            c >>= 3
        pal[i] = rgb
    pal.setflags(write=False)
    return pal


VOC_PALETTE: np.ndarray = _voc_palette()
"""(256, 3) uint8, read-only; row k is the RGB of class k: 0 black, 1 (128, 0, 0), 255 (224, 224, 192)."""

# Label modes we accept: 'P' (indices, palette ignored) and 'L' (grey values are the indices).
_ACCEPTED_MODES = ("P", "L")
_ACCEPTED_FORMATS = ("PNG",)


def _why_mode(mode: str) -> str:
    if mode in ("RGB", "RGBA", "RGBX", "CMYK", "YCbCr"):
        return (
            f"RGB-coded label (mode {mode}, a colour per class); convert it to a palette ('P') "
            "or single-channel ('L') PNG of class indices"
        )
    return f"mode {mode} is not a class-index map; save a palette ('P') or single-channel ('L') PNG"


def read_label(path: str | Path, num_classes: int | None = None) -> np.ndarray:
    """Read a label PNG.

    Args:
        path: palette ('P') or single-channel ('L') PNG; the pixel value is the class index.
        num_classes: C; when given, every value must be in {0..C-1, 255}.

    Returns:
        (H, W) uint8 class indices, 255 = ignore.

    Raises:
        LabelFormatError: missing, empty, not PNG (JPEG is refused by content, whatever the extension),
            RGB-coded, truncated, past PIL's decompression-bomb limit, or values outside {0..C-1, 255}
            (listed in the message).
    """
    p = Path(path)
    if not p.is_file():
        raise LabelFormatError(p, "no such label file" if not p.exists() else "is not a regular file")
    if p.stat().st_size == 0:
        raise LabelFormatError(p, "is empty (0 bytes)")
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    try:
        with Image.open(p) as img:
            if img.format not in _ACCEPTED_FORMATS:
                raise LabelFormatError(
                    p,
                    f"labels must be PNG: this file's content is {img.format}; lossy or foreign formats "
                    "corrupt class indices, re-save labels as palette PNGs",
                )
            if img.mode not in _ACCEPTED_MODES:
                raise LabelFormatError(p, _why_mode(img.mode))
            img.load()
            label = np.array(img, dtype=np.uint8)
    except LabelFormatError:
        raise
    except UnidentifiedImageError as e:
        raise LabelFormatError(p, "not an image file PIL can identify") from e
    except Image.DecompressionBombError as e:  # not an OSError: a header declaring billions of pixels
        raise LabelFormatError(p, f"refused as a decompression bomb ({e})") from e
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        raise LabelFormatError(p, f"cannot decode ({type(e).__name__}: {e}); truncated or corrupt") from e
    if num_classes is not None:
        check_values(label, num_classes, p)
    return label


# Suffixes (lower case) of files that may be a label saved in the wrong format beside its expected PNG.
_LOOKALIKE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"})


def non_png_label(png: str | Path) -> Path | None:
    """The file beside an absent ``png`` with its stem and another image suffix, or None.

    ``SegmentationClass/x.jpg`` (or ``x.PNG``) for ``SegmentationClass/x.png``: a label saved in the
    wrong format or case. Readers attach it so :func:`read_label` names it (labels must be PNG) instead
    of reporting the PNG as absent. The first of several in sorted order."""
    p = Path(png)
    try:
        if p.is_file() or not p.parent.is_dir():
            return None
        for cand in sorted(p.parent.glob(glob.escape(p.stem) + ".*")):
            if cand.suffix.lower() in _LOOKALIKE_SUFFIXES and cand.stem == p.stem and cand.is_file():
                return cand
    except (OSError, ValueError):  # a name that cannot exist (too long, a NUL byte): no such file
        return None
    return None


def check_values(label: np.ndarray, num_classes: int, path: str | Path = "<array>") -> None:
    """Raise LabelFormatError listing the values of ``label`` outside {0..num_classes-1, 255}."""
    present = np.unique(label)
    bad = [int(v) for v in present if v >= num_classes and v != IGNORE_INDEX]
    if bad:
        raise LabelFormatError(
            path,
            f"values outside 0..{num_classes - 1} and {IGNORE_INDEX} (ignore) for {num_classes} classes",
            bad,
        )


def write_label(path: str | Path, label: np.ndarray, palette: np.ndarray | None = None) -> None:
    """Write ``label`` as a palette PNG, atomically (temp file + ``os.replace``).

    Args:
        path: destination ``.png``; replaced if it exists (callers guard user folders).
        label: (H, W) uint8 class indices, 255 = ignore.
        palette: (256, 3) uint8 colours; default :data:`VOC_PALETTE`.

    Raises:
        LabelFormatError: ``label`` is not a 2-D uint8 array.
    """
    arr = np.asarray(label)
    if arr.ndim != 2 or arr.dtype != np.uint8:
        raise LabelFormatError(
            path, f"label to write must be a 2-D uint8 array, got shape {arr.shape} dtype {arr.dtype}"
        )
    pal = VOC_PALETTE if palette is None else np.asarray(palette, dtype=np.uint8)
    img = Image.frombytes("P", (arr.shape[1], arr.shape[0]), np.ascontiguousarray(arr).tobytes())
    img.putpalette(pal.reshape(-1).tolist())

    def _save(f: IO[bytes]) -> None:
        img.save(f, format="PNG", optimize=False)

    atomic_write_with(path, _save)


def check_pair(
    image_path: str | Path,
    image_hw: Sequence[int],
    label_path: str | Path,
    label_hw: Sequence[int],
) -> None:
    """Raise LabelFormatError naming both files and both (H, W) sizes when they differ."""
    ih, iw = int(image_hw[0]), int(image_hw[1])
    lh, lw = int(label_hw[0]), int(label_hw[1])
    if (ih, iw) != (lh, lw):
        raise LabelFormatError(
            label_path, f"label size {lh}x{lw} (HxW) does not match image {image_path} size {ih}x{iw} (HxW)"
        )


def colorize(label: np.ndarray, palette: np.ndarray | None = None) -> np.ndarray:
    """(H, W) integer class indices → (H, W, 3) uint8 RGB through ``palette`` (default VOC)."""
    pal = VOC_PALETTE if palette is None else np.asarray(palette, dtype=np.uint8)
    arr = np.asarray(label)
    if arr.ndim != 2:
        raise LabelFormatError("<array>", f"colorize needs a 2-D label map, got shape {arr.shape}")
    if arr.size and (int(arr.min()) < 0 or int(arr.max()) > 255):
        raise LabelFormatError("<array>", "colorize needs values in 0..255", [int(arr.min()), int(arr.max())])
    return pal[arr.astype(np.intp)]
