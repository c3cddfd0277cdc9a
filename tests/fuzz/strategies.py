"""Hypothesis strategies for structurally plausible, broken inputs: a valid document with a few of its values
replaced by hostile ones (wrong types, missing keys, huge / negative numbers, NaN, odd unicode), then maybe
truncated; PNG files of every mode, bit depth and palette, with bytes flipped or cut; odd zip member names."""

from __future__ import annotations

import copy
import io
import json
import math
import struct
import zlib
from collections.abc import Callable
from typing import Any

import numpy as np
from hypothesis import strategies as st

Path_ = tuple[Any, ...]  # a path into a JSON document: keys and list indices

ODD_TEXT = [
    "",
    " ",
    "ü",
    "名前",
    "\u202etxt.png",
    "a\nb",
    "a\tb",
    "../x",
    "/abs",
    "C:\\x",
    "x" * 300,
    "[bold]",
    "\0",
]
HOSTILE: list[Any] = [
    None,
    True,
    0,
    -1,
    1,
    2**31,
    -(2**63),
    2**64,
    10**30,
    0.5,
    -0.0,
    1e308,
    -1e308,
    math.nan,
    math.inf,
    -math.inf,
    [],
    [[]],
    [None],
    {},
    {"": None},
    *ODD_TEXT,
    "1",
]


def paths(doc: Any, prefix: Path_ = ()) -> list[Path_]:
    """Every path into ``doc`` (the root excluded), depth first."""
    out: list[Path_] = []
    items = doc.items() if isinstance(doc, dict) else enumerate(doc) if isinstance(doc, list) else ()
    for k, v in items:
        out.append((*prefix, k))
        out.extend(paths(v, (*prefix, k)))
    return out


def _parent(doc: Any, path: Path_) -> Any:
    for k in path[:-1]:
        doc = doc[k]
    return doc


@st.composite
def mutated(
    draw: st.DrawFn,
    doc: Any,
    values: st.SearchStrategy[Any] | None = None,
    keep: Callable[[Path_, Any], bool] = lambda path, value: True,
    max_mutations: int = 3,
) -> Any:
    """``doc`` (deep-copied) with 0..``max_mutations`` edits: a value replaced (by ``values``, default
    :data:`HOSTILE`), a key deleted, a list entry duplicated or dropped. ``keep(path, new value)`` filters
    replacements (None means deleted) a test leaves to another item."""
    new = copy.deepcopy(doc)
    pick = values if values is not None else st.sampled_from(HOSTILE)
    for _ in range(draw(st.integers(0, max_mutations))):
        all_paths = paths(new)
        if not all_paths:
            break
        path = draw(st.sampled_from(all_paths))
        parent, key = _parent(new, path), path[-1]
        action = draw(st.sampled_from(["replace", "replace", "replace", "delete", "duplicate"]))
        if action == "replace":
            value = draw(pick)
            if keep(path, value):
                parent[key] = value
        elif action == "delete" and keep(path, None):
            del parent[key]
        elif action == "duplicate" and isinstance(parent, list):
            parent.append(copy.deepcopy(parent[key]))
    return new


def json_bytes(doc: Any) -> bytes:
    """``doc`` as JSON (NaN / Infinity allowed, as Python writes them)."""
    return json.dumps(doc, allow_nan=True).encode()


@st.composite
def damaged(draw: st.DrawFn, data: bytes) -> bytes:
    """``data`` as is, cut short, with a few bytes flipped, or with invalid UTF-8 / NUL spliced in."""
    how = draw(st.sampled_from(["same", "same", "cut", "flip", "splice"]))
    if how == "cut" and data:
        return data[: draw(st.integers(0, len(data) - 1))]
    if how == "flip" and data:
        buf = bytearray(data)
        for _ in range(draw(st.integers(1, 4))):
            buf[draw(st.integers(0, len(buf) - 1))] = draw(st.integers(0, 255))
        return bytes(buf)
    if how == "splice":
        at = draw(st.integers(0, len(data)))
        return data[:at] + draw(st.sampled_from([b"\xff\xfe", b"\0", b"\xc3", b"\xed\xa0\x80"])) + data[at:]
    return data


def _chunk(kind: bytes, body: bytes) -> bytes:
    return (
        struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)
    )


def png_header(w: int, h: int, depth: int = 8, ctype: int = 0, raw: bytes = b"") -> bytes:
    """A PNG of ``w`` x ``h`` declared pixels (any bit depth / colour type) with ``raw`` as its only data."""
    ihdr = struct.pack(">IIBBBBB", w, h, depth, ctype, 0, 0, 0)
    body = _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", zlib.compress(raw)) + _chunk(b"IEND", b"")
    return b"\x89PNG\r\n\x1a\n" + body


@st.composite
def png_files(draw: st.DrawFn, max_side: int = 12) -> bytes:
    """PNG bytes: PIL-written images of many modes (P with short / long palettes and transparency, L, 1,
    LA, I;16, RGB, RGBA) or hand-made headers (any bit depth x colour type, huge sizes), maybe damaged."""
    from PIL import Image

    if draw(st.booleans()):
        h, w = draw(st.integers(1, max_side)), draw(st.integers(1, max_side))
        mode = draw(st.sampled_from(["P", "P", "L", "L", "1", "LA", "I;16", "RGB", "RGBA"]))
        rng = np.random.default_rng(draw(st.integers(0, 2**16)))
        top = draw(st.sampled_from([2, 5, 21, 256]))
        if mode in ("P", "L", "1"):
            arr = rng.integers(0, top, (h, w)).astype(np.uint8)
            if draw(st.booleans()):
                arr[rng.random((h, w)) < 0.3] = 255
            img = Image.frombytes("P" if mode == "P" else "L", (w, h), arr.tobytes())
            if mode == "1":
                img = img.convert("1")
            if mode == "P":
                n = draw(st.sampled_from([0, 1, 3, 21, 256]))  # no palette, short ones, a full one
                if n:
                    img.putpalette([int(c) for c in rng.integers(0, 256, 3 * n)])
                if draw(st.booleans()):
                    img.info["transparency"] = draw(st.integers(0, 255))
        elif mode == "I;16":
            img = Image.fromarray(rng.integers(0, 65536, (h, w)).astype(np.uint16))
        else:
            img = Image.fromarray(rng.integers(0, 256, (h, w, len(mode))).astype(np.uint8), mode)
        buf = io.BytesIO()
        img.save(buf, format="PNG")
        data = buf.getvalue()
    else:
        w = draw(st.sampled_from([0, 1, 7, 2**16, 2**31 - 1]))
        h = draw(st.sampled_from([0, 1, 5, 2**16, 2**31 - 1]))
        depth, ctype = draw(st.sampled_from([1, 2, 4, 7, 8, 16])), draw(st.sampled_from([0, 2, 3, 4, 5, 6]))
        ihdr = struct.pack(">IIBBBBB", w, h, depth, ctype, 0, 0, draw(st.sampled_from([0, 1])))
        plte = _chunk(b"PLTE", bytes(range(3 * draw(st.integers(0, 5))))) if draw(st.booleans()) else b""
        raw = draw(st.binary(max_size=64))
        data = b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + plte + _chunk(b"IDAT", zlib.compress(raw))
        data += _chunk(b"IEND", b"")
    return draw(damaged(data))


MEMBER_NAMES = st.sampled_from(
    [
        "SegmentationClass/x.png",
        "SegmentationClass/sub/x.png",
        "SegmentationClass/ü名.png",
        "SegmentationClass\\im0.png",
        "SegmentationClass/./im0.png",
        "SegmentationClass/im0.png/inner.png",
        "SegmentationClass/dir.png/",
        "SegmentationClass/" + "x" * 300 + ".png",
        "SegmentationClass/a\nb.png",
        "SegmentationClass/.hidden.png",
        "SegmentationClass/im0.PNG",
        "labelmap.txt",
        "sub/labelmap.txt",
        "ImageSets/Segmentation/default.txt",
        "../evil.png",
        "/abs.png",
        "C:/drive.png",
        "SegmentationClass/../../evil.png",
    ]
)
