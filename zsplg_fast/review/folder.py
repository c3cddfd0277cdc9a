"""Read a label folder written by ``label`` (``manifest.json``, ``labels/<id>.png``, ``meta/<id>.json``).

The review loop (export, import, report) reads only through :class:`LabelFolder`, so older folders
whose meta lacks the review fields (``margin``, ``rle`` per mask, ``uncovered_fraction``) still work:
:meth:`LabelFolder.missing_fields` names what is missing and each consumer degrades.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from zsplg_fast.data import read_label
from zsplg_fast.errors import DatasetError

IGNORE = 255
IGNORE_NAME = "ignore"
REVIEW_FIELDS = ("margin", "rle", "uncovered_fraction")


@dataclass(frozen=True)
class Item:
    """One labeled image: ``id`` (may contain '/'), its label PNG, meta JSON and source image path."""

    id: str
    label_path: Path
    meta_path: Path
    image_path: Path | None
    num_classes: int | None = None  # the manifest's: label values are checked against it

    def label(self) -> np.ndarray:
        """(H, W) uint8 class indices, 255 = ignore (values checked against the manifest's classes)."""
        return read_label(self.label_path, self.num_classes)

    def meta(self) -> dict[str, Any]:
        """The meta record the labeler wrote (masks, classes, scores, timings); {} for a folder written
        by ``labels import`` (no meta)."""
        if not self.meta_path.exists():
            return {}
        try:
            meta = json.loads(self.meta_path.read_text(encoding="utf-8"))
        except (OSError, ValueError, RecursionError) as e:  # UnicodeDecodeError, JSONDecodeError
            raise DatasetError(self.meta_path, f"unreadable meta JSON ({e})") from e
        if not isinstance(meta, dict) or not isinstance(meta.get("masks", []), list):
            raise DatasetError(self.meta_path, "meta JSON is not an object with a 'masks' list")
        for i, m in enumerate(meta.get("masks", [])):
            why = _mask_problem(m)
            if why:
                raise DatasetError(self.meta_path, f"masks[{i}]: {why}")
        return meta


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)  # NaN kept: a score may be one


def _mask_problem(m: Any) -> str | None:
    """What is wrong with one meta mask record (the fields the review formats read), or None."""
    if not isinstance(m, dict):
        return "not an object"
    cls = m.get("class")
    if not (isinstance(cls, int) and not isinstance(cls, bool) and 0 <= cls <= IGNORE):
        return f"'class' must be an integer in 0..{IGNORE}, got {cls!r}"
    for key in ("score", "area", "margin"):  # margin may be null (older folders), the others not
        if key in m and not _number(m[key]) and not (key == "margin" and m[key] is None):
            return f"'{key}' must be a number, got {m[key]!r}"
    rle = m.get("rle")
    if rle is not None:
        size = rle.get("size") if isinstance(rle, dict) else None
        ok = isinstance(size, list) and len(size) == 2 and all(isinstance(v, int) and v > 0 for v in size)
        if not ok or not isinstance(rle.get("counts"), str):
            return "'rle' must be a COCO RLE {size: [h, w], counts: string}"
        limit = Image.MAX_IMAGE_PIXELS
        if limit is not None and size[0] * size[1] > 2 * limit:
            return f"'rle' size {size} is past the decompression-bomb limit"
        from pycocotools import mask as mask_utils

        try:
            mask_utils.decode({"size": size, "counts": rle["counts"].encode()})
        except (ValueError, TypeError) as e:
            return f"'rle' does not decode ({e})"
    return None


class LabelFolder:
    """A finished (or partial) label output folder. Only images whose PNG and meta both exist count."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        mpath = self.root / "manifest.json"
        if not mpath.is_file():
            raise DatasetError(self.root, "not a label folder: no manifest.json (write one with `label`)")
        try:
            self.manifest: dict[str, Any] = json.loads(mpath.read_text(encoding="utf-8"))
        except (OSError, ValueError, RecursionError) as e:  # UnicodeDecodeError, JSONDecodeError
            raise DatasetError(mpath, f"unreadable manifest ({e})") from e
        if not isinstance(self.manifest, dict):
            raise DatasetError(mpath, "manifest is not a JSON object")
        classes = self.manifest.get("classes")
        if not isinstance(classes, list) or not classes:
            raise DatasetError(mpath, "has no 'classes' list")
        self.classes: list[str] = [str(c) for c in classes]

    @property
    def uncovered(self) -> str:
        """'background' or 'ignore': what the labeler paints where no mask covers."""
        cfg = self.manifest.get("config")
        classify = cfg.get("classify") if isinstance(cfg, dict) else None
        value = classify.get("uncovered") if isinstance(classify, dict) else None
        return value if value in ("background", "ignore") else "background"

    @cached_property
    def items(self) -> list[Item]:
        """Every done image, sorted by id."""
        meta_root, label_root = self.root / "meta", self.root / "labels"
        n = len(self.classes)
        if not meta_root.is_dir() and label_root.is_dir():  # written by `labels import`: labels only
            return [
                Item(p.relative_to(label_root).with_suffix("").as_posix(), p, meta_root / "-", None, n)
                for p in sorted(label_root.rglob("*.png"))
            ] or self._empty()
        out = []
        for mp in sorted(meta_root.rglob("*.json")) if meta_root.is_dir() else []:
            sid = mp.relative_to(meta_root).with_suffix("").as_posix()
            lp = label_root / f"{sid}.png"
            if not lp.is_file():
                continue
            image = None
            try:
                meta = json.loads(mp.read_text(encoding="utf-8"))
            except (OSError, ValueError, RecursionError):
                continue  # not done (meta is written last): skipped like the label job does
            image = meta.get("image") if isinstance(meta, dict) else None
            image = image if isinstance(image, str) and image and "\0" not in image else None
            out.append(Item(sid, lp, mp, Path(image) if image else None, n))
        return out or self._empty()

    def _empty(self) -> list[Item]:
        raise DatasetError(self.root, "holds no labeled images (labels/*.png with meta/*.json)")

    def __iter__(self) -> Iterator[Item]:
        return iter(self.items)

    def __len__(self) -> int:
        return len(self.items)

    def get(self, sample_id: str) -> Item | None:
        """The item of ``sample_id`` or None."""
        return self._by_id.get(sample_id)

    @cached_property
    def _by_id(self) -> dict[str, Item]:
        return {it.id: it for it in self.items}

    def missing_fields(self, sample: int = 20) -> list[str]:
        """Review fields absent from the first ``sample`` metas (older folders): subset of REVIEW_FIELDS."""
        missing: set[str] = set()
        for it in self.items[:sample]:
            meta = it.meta()
            if not meta:  # no meta at all (a folder written by `labels import`)
                missing.update(REVIEW_FIELDS)
            if "uncovered_fraction" not in meta:
                missing.add("uncovered_fraction")
            for m in meta.get("masks", []):
                missing.update(f for f in ("margin", "rle") if m.get(f) is None)
        return [f for f in REVIEW_FIELDS if f in missing]


def class_names_with_ignore(classes: list[str]) -> dict[int, str]:
    """Label value → name: the manifest classes plus 255 → 'ignore'."""
    return {**dict(enumerate(classes)), IGNORE: IGNORE_NAME}


def mask_rles(meta: dict[str, Any]) -> list[dict[str, Any]] | None:
    """The SAM masks' COCO RLEs from meta (``counts`` bytes for pycocotools), or None when absent."""
    masks = meta.get("masks", [])
    if not masks or any(m.get("rle") is None for m in masks):
        return None if masks else []
    return [{"size": m["rle"]["size"], "counts": m["rle"]["counts"].encode()} for m in masks]


def visible_masks(
    label: np.ndarray, meta: dict[str, Any], include_background: bool = False
) -> list[tuple[int, float, np.ndarray]] | None:
    """Each SAM mask's visible part: (class, score, (H, W) bool) where the label shows that mask's class.

    Paint order is large → small, so a mask's visible pixels are those of its class inside it that no
    smaller painted mask took. Fully hidden masks, and those of class 0 (background) unless
    ``include_background``, are left out. Class pixels no mask explains (an edited label) are added as
    connected regions, so the union of the parts of class k is exactly ``label == k``. None when meta
    has no RLEs (older folders).
    """
    from pycocotools import mask as mask_utils

    from zsplg_fast.labeling.labeler import to_display

    rles = mask_rles(meta)
    if rles is None:
        return None
    masks = meta.get("masks", [])
    taken = np.zeros(label.shape, bool)
    parts: list[tuple[int, float, np.ndarray]] = []
    areas = [int(m.get("area", 0)) for m in masks]
    order = sorted(range(len(masks)), key=lambda i: -areas[i])  # stable: matches paint()
    for i in reversed(order):  # smallest (painted last, on top) first
        m = mask_utils.decode(rles[i]).astype(bool)
        if m.shape != label.shape:  # masks at the working resolution (meta work_size): as the label was
            m = to_display(m.astype(np.uint8), label.shape).astype(bool)
        cls = int(masks[i]["class"])
        vis = m & ~taken & (label == cls)
        taken |= m
        if (cls != 0 or include_background) and vis.any():
            parts.append((cls, float(masks[i].get("score", 1.0)), vis))
    parts.reverse()
    covered = np.zeros(label.shape, bool)
    for _, _, vis in parts:
        covered |= vis
    lo = 0 if include_background else 1  # pixels no mask explains (an edited PNG, no masks):
    return parts + class_regions(label, ~covered, lo)


def class_regions(
    label: np.ndarray, where: np.ndarray | None = None, lo: int = 1
) -> list[tuple[int, float, np.ndarray]]:
    """(class, 1.0, (H, W) bool) per 8-connected region of each class ``lo``..254 (inside ``where``)."""
    import cv2

    out = []
    for v in (int(x) for x in np.unique(label) if lo <= x < IGNORE):
        m = label == v
        if where is not None:
            m &= where
        n, comp = cv2.connectedComponents(m.astype(np.uint8), connectivity=8)
        out.extend((v, 1.0, comp == i) for i in range(1, n))
    return out
