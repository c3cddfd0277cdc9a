"""The one image loader of the project: any file → (H, W, 3) uint8 RGB, or a typed error naming it.

Policy, in the order applied:

1. the path must be an existing, non-empty regular file;
2. the header is read (no pixel decoding) and its size checked against ``max_long_side`` and
   against PIL's own decompression-bomb limit (``PIL.Image.MAX_IMAGE_PIXELS``);
3. 16-bit and float data (modes ``I;16*``, ``I``, ``F``, and 16-bit PNGs whichever their colour type)
   are refused unless ``rescale_high_bit_depth=True``;
4. decoding is forced (``img.load()``) with ``ImageFile.LOAD_TRUNCATED_IMAGES`` False, so a
   truncated or corrupt file fails here and not in a worker later;
5. EXIF orientation is applied (``ImageOps.exif_transpose``);
6. the mode is converted to RGB through :data:`CONVERTERS` (alpha composited onto black).

Every non-trivial step is counted in a :class:`LoadStats`.
"""

from __future__ import annotations

import json
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from zsplg_runtime.errors import InputImageError

DEFAULT_MAX_LONG_SIDE = 16384

# Modes whose samples are wider than 8 bits (PIL keeps 16-bit grey as I;16*, 32-bit as I / F).
HIGH_BIT_DEPTH_MODES = frozenset(
    {"I;16", "I;16L", "I;16B", "I;16N", "I;16S", "I;32", "I;32L", "I;32B", "I", "F"}
)


@dataclass
class LoadStats:
    """Counts of what :func:`load_image` did: ``loaded``, ``mode:<M>`` conversions, ``alpha_to_black``,
    ``exif_transposed``, ``exif_unreadable``, ``rescaled:<M>``.

    Thread-safe (decoding threads may share one); :meth:`merge` combines per-worker stats.
    """

    counts: Counter[str] = field(default_factory=Counter)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, key: str, n: int = 1) -> None:
        """Increment ``key`` by ``n``."""
        with self._lock:
            self.counts[key] += n

    def merge(self, other: LoadStats) -> LoadStats:
        """Add ``other``'s counts into this one; returns ``self``."""
        snapshot = other.to_dict()
        with self._lock:
            self.counts.update(snapshot)
        return self

    def to_dict(self) -> dict[str, int]:
        """Plain, key-sorted dict (JSON-able)."""
        with self._lock:
            return {k: int(v) for k, v in sorted(self.counts.items())}

    def to_json(self) -> str:
        """JSON text of :meth:`to_dict`."""
        return json.dumps(self.to_dict())

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LoadStats:
        """Inverse of :meth:`to_dict`."""
        return cls(Counter({str(k): int(v) for k, v in d.items()}))


def _check_file(p: Path) -> None:
    if not p.exists():
        raise InputImageError(p, "no such file")
    if p.is_dir():
        raise InputImageError(p, "is a directory, not an image file")
    if not p.is_file():
        raise InputImageError(p, "is not a regular file")
    if p.stat().st_size == 0:
        raise InputImageError(p, "is empty (0 bytes); re-copy or remove it")


def _tile_rawmodes(img: Image.Image) -> list[str]:
    """Raw decoder modes from the (not yet decoded) tile list, e.g. ``'RGB;16B'`` for a 16-bit PNG."""
    out = []
    for tile in getattr(img, "tile", None) or []:
        args = tile[3] if len(tile) > 3 else None
        first = args[0] if isinstance(args, tuple) and args else args
        if isinstance(first, str):
            out.append(first)
    return out


def _is_high_bit_depth(img: Image.Image) -> bool:
    if img.mode in HIGH_BIT_DEPTH_MODES:
        return True
    # 16-bit RGB(A)/LA PNGs open as 8-bit modes whose decoder silently keeps the high byte.
    return any(";16" in r or ";32" in r for r in _tile_rawmodes(img))


def _rescale_to_u8(img: Image.Image) -> np.ndarray:
    """High-bit-depth single-band image → (H, W) uint8, linearly.

    * integer modes (``I;16*``, ``I``): clip to [0, 65535], keep the high byte (``v >> 8``), the same
      mapping PIL applies itself when it decodes 16-bit RGB(A) PNGs;
    * float mode ``F``: values in [0, 1] map to ``round(255 v)``; otherwise the finite range
      [min, max] is stretched to [0, 255]; NaN/inf become 0.
    """
    a = np.asarray(img)
    if img.mode == "F" or a.dtype.kind == "f":
        a = a.astype(np.float64)
        finite = np.isfinite(a)
        if not finite.any():
            return np.zeros(a.shape, np.uint8)
        lo, hi = float(a[finite].min()), float(a[finite].max())
        if not (lo >= 0.0 and hi <= 1.0):
            a = (a - lo) / (hi - lo) if hi > lo else np.zeros_like(a)
        return np.where(finite, np.rint(np.clip(a, 0.0, 1.0) * 255.0), 0).astype(np.uint8)
    return (np.clip(a.astype(np.int64), 0, 65535) >> 8).astype(np.uint8)


def _gray_to_rgb(g: np.ndarray) -> np.ndarray:
    return np.repeat(g[:, :, None], 3, axis=2)


def _plain(img: Image.Image) -> np.ndarray:
    return np.asarray(img.convert("RGB"))


def _composite_black(img: Image.Image) -> np.ndarray:
    """Any mode with alpha → RGBA → ``rgb * alpha / 255`` (rounded), i.e. alpha over black."""
    rgba = np.asarray(img.convert("RGBA")).astype(np.uint16)
    rgb, alpha = rgba[:, :, :3], rgba[:, :, 3:4]
    return ((rgb * alpha + 127) // 255).astype(np.uint8)


def _palette(img: Image.Image) -> np.ndarray:
    if "transparency" in img.info:
        return _composite_black(img)
    return _plain(img)


def _high(img: Image.Image) -> np.ndarray:
    return _gray_to_rgb(_rescale_to_u8(img))


# mode → converter returning (H, W, 3) uint8. Modes not listed fall back to PIL's convert("RGB").
CONVERTERS: dict[str, Callable[[Image.Image], np.ndarray]] = {
    "RGBA": _composite_black,
    "RGBa": _composite_black,
    "LA": _composite_black,
    "La": _composite_black,
    "PA": _composite_black,
    "P": _palette,
    **{m: _high for m in HIGH_BIT_DEPTH_MODES},
}

# Conversions that are counted with an extra key besides ``mode:<M>``.
_ALPHA_MODES = frozenset({"RGBA", "RGBa", "LA", "La", "PA"})


def _header_checks(img: Image.Image, p: Path, max_long_side: int) -> None:
    w, h = img.size
    if max(w, h) > max_long_side:
        raise InputImageError(
            p,
            f"header says {w}x{h} (WxH), long side exceeds max_long_side={max_long_side}; "
            "refused before decoding (raise data.max_long_side if the file is trusted)",
        )
    limit = Image.MAX_IMAGE_PIXELS
    if limit is not None and w * h > limit:
        raise InputImageError(
            p,
            f"header says {w}x{h} = {w * h} pixels, over PIL's decompression-bomb limit "
            f"(PIL.Image.MAX_IMAGE_PIXELS={limit}); raise that limit if the file is trusted",
        )


def load_image(
    path: str | Path,
    *,
    max_long_side: int = DEFAULT_MAX_LONG_SIDE,
    rescale_high_bit_depth: bool = False,
    stats: LoadStats | None = None,
) -> np.ndarray:
    """Load one image file as RGB.

    Args:
        path: image file (any format PIL reads; the format is detected from content).
        max_long_side: refuse images whose header declares a side longer than this (bomb guard).
        rescale_high_bit_depth: rescale 16-bit / float images to 8 bits (see :func:`_rescale_to_u8`)
            instead of refusing them. 16-bit RGB(A) PNGs keep their high byte (``v >> 8``).
        stats: optional :class:`LoadStats` to count conversions into.

    Returns:
        (H, W, 3) uint8 RGB, C-contiguous, values 0..255, EXIF orientation applied
        (so H, W are those of the displayed image, possibly transposed vs. the header).

    Raises:
        InputImageError: missing / empty / directory / non-image / truncated / corrupt file, too large,
            or high bit depth without ``rescale_high_bit_depth``. The message names the file.
    """
    p = Path(path)
    _check_file(p)
    # Truncated files must fail here; some libraries flip this global on, so we reset it each call.
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    try:
        with Image.open(p) as img:
            _header_checks(img, p, max_long_side)
            high = _is_high_bit_depth(img)
            if high and not rescale_high_bit_depth:
                raw = ",".join(_tile_rawmodes(img)) or img.mode
                raise InputImageError(
                    p,
                    f"high-bit-depth image (mode {img.mode}, raw {raw}); refused because 8-bit is expected; "
                    "set data.rescale_high_bit_depth=true to rescale it linearly to 8 bits",
                )
            img.load()
            rgb = _to_rgb(img, p, high, stats)
    except InputImageError:
        raise
    except UnidentifiedImageError as e:
        raise InputImageError(p, "not an image file PIL can identify (check its content)") from e
    except Image.DecompressionBombError as e:
        raise InputImageError(p, f"refused by PIL's decompression-bomb guard: {e}") from e
    except PermissionError as e:
        raise InputImageError(p, "permission denied; check the file's permissions") from e
    except (OSError, SyntaxError, ValueError, EOFError, MemoryError) as e:
        raise InputImageError(p, f"cannot decode ({type(e).__name__}: {e}); truncated or corrupt file") from e
    if stats is not None:
        stats.add("loaded")
    return np.ascontiguousarray(rgb)


def _to_rgb(img: Image.Image, p: Path, high: bool, stats: LoadStats | None) -> np.ndarray:
    try:
        orientation = int(img.getexif().get(0x0112, 1) or 1)
        if orientation != 1:
            img = ImageOps.exif_transpose(img)
            if stats is not None:
                stats.add("exif_transposed")
    except (OSError, ValueError, SyntaxError, KeyError, TypeError):
        if stats is not None:
            stats.add("exif_unreadable")
    mode = img.mode
    if high and stats is not None:
        stats.add(f"rescaled:{mode}")
    if mode == "RGB":
        return np.asarray(img)
    if stats is not None:
        stats.add(f"mode:{mode}")
        if mode in _ALPHA_MODES or (mode == "P" and "transparency" in img.info):
            stats.add("alpha_to_black")
    out = CONVERTERS.get(mode, _plain)(img)
    if out.ndim != 3 or out.shape[2] != 3 or out.dtype != np.uint8:
        raise InputImageError(p, f"mode {mode} did not convert to RGB (got {out.shape} {out.dtype})")
    return out
