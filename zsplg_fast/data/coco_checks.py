"""Structure of a COCO instances JSON, checked before pycocotools indexes it.

pycocotools trusts its input: a string where a list belongs, a missing ``id`` or a list as an id ends in a
``TypeError`` / ``KeyError`` deep inside ``createIndex``, a negative or huge ``height`` in numpy, and a
polygon coordinate past the C int range in a segmentation fault (``frPyObjects``). These checks turn each
into a :class:`~zsplg_fast.errors.DatasetError` naming the file, the entry and the key. Used by the data
layer (``coco:`` sources, ``data coco-masks``) and by ``labels import --format coco``.

The content of a compressed RLE (``counts``) is left to the readers (a malformed crowd RLE is counted and
skipped: issue 21 item 6); :func:`rle_problem` is the check they use.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from PIL import Image

from zsplg_fast.errors import DatasetError

MAX_SIDE = 1 << 16  # image side in pixels; the label map of one image is H x W bytes


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def is_number(v: Any) -> bool:
    """A finite JSON number (not a bool)."""
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _entries(path: Path, data: Mapping[str, Any], key: str) -> list[dict[str, Any]]:
    items = data.get(key)
    if not isinstance(items, list):
        raise DatasetError(path, f"'{key}' must be a list, got {type(items).__name__}")
    for n, it in enumerate(items):
        if not isinstance(it, dict):
            raise DatasetError(path, f"{key}[{n}] must be an object, got {type(it).__name__}")
    return items


def _unique_ids(path: Path, items: list[dict[str, Any]], key: str) -> set[int]:
    seen: set[int] = set()
    for n, it in enumerate(items):
        i = it.get("id")
        if not _is_int(i):
            raise DatasetError(path, f"{key}[{n}]: 'id' must be an integer, got {i!r}")
        if i in seen:
            raise DatasetError(path, f"{key}[{n}]: id {i} is used twice")
        seen.add(i)
    return seen


def check_image_size(
    path: Path, where: str, height: Any, width: Any, keys: tuple[str, str] = ("height", "width")
) -> tuple[int, int]:
    """(H, W) when both are integers in 1..MAX_SIDE and H*W is within PIL's bomb limit; else DatasetError
    naming ``keys`` (the JSON keys of height and width)."""
    for name, v in zip(keys, (height, width), strict=True):
        if not (_is_int(v) or (is_number(v) and float(v).is_integer())) or not 1 <= v <= MAX_SIDE:
            raise DatasetError(path, f"{where}: '{name}' must be an integer in 1..{MAX_SIDE}, got {v!r}")
    h, w = int(height), int(width)
    limit = Image.MAX_IMAGE_PIXELS
    if limit is not None and h * w > 2 * limit:
        raise DatasetError(path, f"{where}: {h}x{w} pixels is past the decompression-bomb limit {2 * limit}")
    return h, w


def check_instances(path: str | Path, data: Any, check_rle: bool = True) -> None:
    """Refuse a COCO instances document whose structure pycocotools would choke on.

    Checks: ``images``, ``annotations`` and ``categories`` are lists of objects; ids are unique integers;
    images have a non-empty string ``file_name`` and integer ``height``/``width`` (see
    :func:`check_image_size`); categories have a string ``name``; annotations have integer
    ``image_id`` (of a listed image) and ``category_id``, ``iscrowd`` 0 or 1, and a ``segmentation``
    that is a list (polygons) or an object (RLE) with a ``size`` of the image's ``[height, width]``
    (with ``check_rle``; the data layer counts and skips a malformed RLE instead: issue 21 item 6).

    Raises:
        DatasetError: naming ``path``, the entry (``images[3]``, ``annotation 17``) and the key.
    """
    p = Path(path)
    if not isinstance(data, dict) or not all(k in data for k in ("images", "annotations", "categories")):
        raise DatasetError(p, "not a COCO instances file (needs 'images', 'annotations', 'categories')")
    images = _entries(p, data, "images")
    anns = _entries(p, data, "annotations")
    cats = _entries(p, data, "categories")
    _unique_ids(p, images, "images")
    _unique_ids(p, cats, "categories")
    _unique_ids(p, anns, "annotations")
    sizes: dict[int, tuple[int, int]] = {}
    for img in images:
        where = f"image id {img['id']}"
        fn = img.get("file_name")
        if not isinstance(fn, str) or not fn.strip() or "\0" in fn:
            raise DatasetError(p, f"{where}: 'file_name' must be a non-empty string, got {fn!r}")
        sizes[img["id"]] = check_image_size(p, where, img.get("height"), img.get("width"))
    for c in cats:
        if not isinstance(c.get("name"), str):
            raise DatasetError(p, f"category id {c['id']}: 'name' must be a string, got {c.get('name')!r}")
    for a in anns:
        where = f"annotation {a['id']}"
        for key in ("image_id", "category_id"):
            if not _is_int(a.get(key)):
                raise DatasetError(p, f"{where}: '{key}' must be an integer, got {a.get(key)!r}")
        if a["image_id"] not in sizes:
            raise DatasetError(p, f"{where}: 'image_id' {a['image_id']} is not among the images")
        if a.get("iscrowd", 0) not in (0, 1):
            raise DatasetError(p, f"{where}: 'iscrowd' must be 0 or 1, got {a.get('iscrowd')!r}")
        seg = a.get("segmentation")
        if isinstance(seg, dict):
            if not check_rle:
                continue
            size = seg.get("size")
            h, w = sizes[a["image_id"]]
            if size != [h, w]:
                raise DatasetError(
                    p, f"{where}: RLE 'size' {size!r} is not the image's [height, width] [{h}, {w}]"
                )
            if not isinstance(seg.get("counts"), (str, list)):
                raise DatasetError(p, f"{where}: RLE 'counts' must be a string or a list")
        elif not isinstance(seg, list):
            raise DatasetError(
                p, f"{where}: 'segmentation' must be a list of polygons or an RLE object, got {seg!r:.40}"
            )


def clean_polygon(poly: Any, hw: tuple[int, int]) -> str | None:
    """Why ``poly`` cannot be drawn ('malformed', 'out_of_range'), or None when it is a list of finite
    numbers within 4 image sides of the image (pycocotools' polygon rasteriser overflows C ints and
    allocates per pixel of the outline, so a coordinate of 1e300 segfaults and 1e9 exhausts memory)."""
    if not isinstance(poly, list) or not all(is_number(v) for v in poly):
        return "malformed"
    reach = 4 * max(hw) + 16
    if any(abs(v) > reach for v in poly):
        return "out_of_range"
    return None


def rle_runs(counts: Any) -> list[int]:
    """Run lengths of an RLE ``counts``: a list of ints, or the compressed string.

    The string format is pycocotools' (``maskApi.c: rleFrString``, followed, not copied): 6-bit
    groups offset by 48, bit 0x20 = more groups follow, bit 0x10 of the last group = sign, and from
    the third run on each value is a difference to the run two before.

    Raises:
        ValueError: not a list of non-negative ints nor an ASCII string of valid groups.
    """
    if isinstance(counts, list):
        if not all(isinstance(c, int) and not isinstance(c, bool) and c >= 0 for c in counts):
            raise ValueError("uncompressed counts must be non-negative integers")
        return counts
    if isinstance(counts, bytes):
        counts = counts.decode("ascii", errors="replace")
    if not isinstance(counts, str):
        raise ValueError(f"counts is a {type(counts).__name__}, not a string or a list")
    runs: list[int] = []
    p = 0
    while p < len(counts):
        x, k, more = 0, 0, True
        while more:
            if p >= len(counts):
                raise ValueError("compressed counts end inside a run")
            c = ord(counts[p]) - 48
            if not 0 <= c < 64:
                raise ValueError(f"character {counts[p]!r} at {p} is not in the compressed alphabet")
            x |= (c & 0x1F) << (5 * k)
            more = bool(c & 0x20)
            p, k = p + 1, k + 1
            if not more and c & 0x10:
                x |= -1 << (5 * k)
        if len(runs) > 2:
            x += runs[-2]
        if x < 0:
            raise ValueError(f"run {len(runs)} is negative ({x})")
        runs.append(x)
    return runs


def rle_problem(segm: dict[str, Any], h: int, w: int) -> str | None:
    """Why an RLE ``segmentation`` cannot be decoded for an (h, w) image, or None when it can."""
    size = segm.get("size")
    if not (isinstance(size, list) and len(size) == 2 and all(isinstance(v, int) for v in size)):
        return f"RLE 'size' is {size!r}, not [height, width]"
    if size != [h, w]:
        return f"RLE size {size} is not the image's [{h}, {w}]"
    try:
        runs = rle_runs(segm.get("counts"))
    except ValueError as e:
        return f"invalid RLE counts ({e})"
    if sum(runs) != h * w:
        return f"RLE runs add up to {sum(runs)} pixels, not {h}x{w} = {h * w}"
    return None
