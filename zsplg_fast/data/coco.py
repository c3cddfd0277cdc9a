"""COCO instances JSON → semantic label maps with UniMatch's 81 classes, via pycocotools.

Class indices: 0 = background, then the thing categories in the order of their sorted
(non-contiguous) category ids: 1 = person (id 1), ..., 80 = toothbrush (id 90).

Painting (one mask per image, (H, W) uint8):

1. every pixel starts as 0 (background);
2. non-crowd annotations are painted largest first (rendered pixel area, ties by annotation id),
   so smaller objects painted later win where they overlap;
3. crowd regions (``iscrowd=1``, RLE or polygons) are painted last as 255 (ignore).
   UniMatch ships its COCO masks already converted (README: "pre-processed by us") and no converter;
   we follow the common convention for those masks, ignore over crowd, painted after things so a
   crowd region stays ignored even where a thing overlaps it.

Degenerate polygons are dropped and counted: fewer than 3 points (< 6 coordinates; pycocotools reads
a 4-number polygon as a bbox, or raises TypeError in recent versions), an odd number of coordinates,
or zero area (shoelace); so are polygons that are not lists of finite numbers (``polygons_malformed``)
and polygons reaching more than 4 image sides outside the image (``polygons_out_of_range``: pycocotools'
rasteriser overflows there). The file's structure is checked first (:mod:`zsplg_fast.data.coco_checks`).
An annotation left with no polygon, or whose mask renders empty, is dropped and counted too.
A malformed RLE (compressed or not: undecodable counts, runs that do not add up to its size, a size
other than its image's) is dropped and counted as ``annotations_rle_invalid``; every dropped
annotation is also listed (annotation id, image file, reason) when a ``skipped`` list is given.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
from collections import Counter
from functools import partial
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from zsplg_fast.data.coco_checks import check_instances, clean_polygon, rle_problem
from zsplg_fast.data.labels import IGNORE_INDEX, write_label
from zsplg_fast.data.sources import DataSource, Sample, check_root
from zsplg_fast.data.splits import find_split, read_split, resolve_entry
from zsplg_fast.errors import DatasetError, MissingDependencyError, OutputExistsError

_INSTANCES = re.compile(r"^instances_(.+)\.json$")


def _coco_cls() -> Any:
    try:
        from pycocotools.coco import COCO
    except ImportError as e:  # pragma: no cover - pycocotools is a core dependency
        raise MissingDependencyError("pycocotools", "COCO datasets", "pip install pycocotools") from e
    return COCO


def load_coco(ann_file: str | Path) -> Any:
    """Load an instances JSON into a ``pycocotools.coco.COCO`` (quietly) and check category ids.

    Raises:
        DatasetError: missing/invalid JSON, missing image sizes, or an annotation whose category id
            is not among ``categories``.
    """
    p = Path(ann_file)
    if not p.is_file():
        raise DatasetError(p, "COCO annotation file not found")
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        raise DatasetError(p, f"not valid JSON ({type(e).__name__}: {e})") from e
    check_instances(p, data, check_rle=False)  # types, ids, sizes: pycocotools trusts them
    coco = _coco_cls()()
    coco.dataset = data
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
        coco.createIndex()
    cats = set(coco.cats)
    for ann in coco.anns.values():
        if ann.get("category_id") not in cats:
            raise DatasetError(p, f"annotation {ann.get('id')}: unknown category id {ann.get('category_id')}")
    if len(cats) > IGNORE_INDEX - 1:
        raise DatasetError(p, f"{len(cats)} categories do not fit a uint8 label map with 255 = ignore")
    return coco


def category_map(coco: Any) -> dict[int, int]:
    """COCO category id → class index: sorted ids map to 1..K (0 is background)."""
    return {cid: i + 1 for i, cid in enumerate(sorted(coco.cats))}


def class_names(coco: Any) -> list[str]:
    """``['background', <name of the smallest category id>, ...]`` (81 names for COCO)."""
    return ["background"] + [coco.cats[cid]["name"] for cid in sorted(coco.cats)]


def _shoelace(poly: list[float]) -> float:
    x, y = np.asarray(poly[0::2], np.float64), np.asarray(poly[1::2], np.float64)
    return 0.5 * abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))


def _clean_polygons(polys: list[list[float]], stats: Counter[str], hw: tuple[int, int]) -> list[list[float]]:
    kept = []
    for poly in polys:
        why = clean_polygon(poly, hw)  # not numbers, NaN, or far outside the image (segfaults pycocotools)
        if why is not None:
            stats[f"polygons_{why}"] += 1
        elif len(poly) % 2:
            stats["polygons_malformed"] += 1
        elif len(poly) < 6:
            stats["polygons_few_points"] += 1
        elif _shoelace(poly) == 0.0:
            stats["polygons_zero_area"] += 1
        else:
            kept.append(poly)
    return kept


def _drop(
    stats: Counter[str],
    key: str,
    ann: dict[str, Any],
    info: dict[str, Any],
    skipped: list[dict[str, Any]] | None,
    reason: str,
) -> None:
    stats[key] += 1
    if skipped is not None:
        skipped.append({"annotation": ann.get("id"), "image": info.get("file_name"), "reason": reason})


def _ann_mask(
    coco: Any,
    ann: dict[str, Any],
    stats: Counter[str],
    info: dict[str, Any],
    skipped: list[dict[str, Any]] | None = None,
) -> np.ndarray | None:
    """(H, W) bool mask of one annotation via ``COCO.annToMask``, or None if dropped (counted)."""
    segm = ann.get("segmentation")
    h, w = int(info["height"]), int(info["width"])
    if isinstance(segm, list):
        kept = _clean_polygons(segm, stats, (h, w))
        if not kept:
            _drop(stats, "annotations_dropped", ann, info, skipped, "no usable polygon")
            return None
        ann = {**ann, "segmentation": kept}
    elif isinstance(segm, dict):
        problem = rle_problem(segm, h, w)
        if problem is not None:
            _drop(stats, "annotations_rle_invalid", ann, info, skipped, problem)
            return None
    else:
        _drop(stats, "annotations_dropped", ann, info, skipped, "no segmentation")
        return None
    try:
        m = coco.annToMask(ann).astype(bool)
    except (ValueError, TypeError, OverflowError) as e:  # pycocotools' own refusal, as a last guard
        _drop(stats, "annotations_rle_invalid", ann, info, skipped, f"{type(e).__name__}: {e}")
        return None
    if m.shape != (h, w):
        _drop(stats, "annotations_rle_invalid", ann, info, skipped, f"mask is {m.shape}, image ({h}, {w})")
        return None
    if not m.any():
        _drop(stats, "annotations_empty", ann, info, skipped, "mask is empty")
        return None
    return m


def semantic_mask(
    coco: Any,
    img_id: int,
    cat_map: dict[int, int] | None = None,
    stats: Counter[str] | None = None,
    ann_file: str | Path = "<coco>",
    skipped: list[dict[str, Any]] | None = None,
) -> np.ndarray:
    """Semantic label map of one image (see the module docstring for the painting order).

    Args:
        coco: a ``pycocotools.coco.COCO``.
        img_id: COCO image id.
        cat_map: category id → class index (default :func:`category_map`).
        stats: Counter to add ``painted``, ``crowd``, ``polygons_*`` and ``annotations_*`` counts to.
        ann_file: named in errors.
        skipped: list to append ``{"annotation", "image", "reason"}`` to for each dropped annotation.

    Returns:
        (H, W) uint8: 0 background, 1..K classes, 255 crowd (ignore).

    Raises:
        DatasetError: an annotation with an unknown category id.
    """
    cmap = category_map(coco) if cat_map is None else cat_map
    st: Counter[str] = Counter() if stats is None else stats
    info = coco.imgs[img_id]
    label = np.zeros((int(info["height"]), int(info["width"])), np.uint8)
    things: list[tuple[int, int, np.ndarray, int]] = []
    crowds: list[np.ndarray] = []
    for ann in coco.loadAnns(coco.getAnnIds(imgIds=[img_id], iscrowd=None)):
        cid = ann.get("category_id")
        if cid not in cmap:
            raise DatasetError(ann_file, f"annotation {ann.get('id')}: unknown category id {cid}")
        m = _ann_mask(coco, ann, st, info, skipped)
        if m is None:
            continue
        if ann.get("iscrowd", 0):
            crowds.append(m)
        else:
            things.append((-int(m.sum()), int(ann.get("id", 0)), m, cmap[cid]))
    for _, _, m, cls in sorted(things, key=lambda t: (t[0], t[1])):
        label[m] = cls
    for m in crowds:
        label[m] = IGNORE_INDEX
    st["painted"] += len(things)
    st["crowd"] += len(crowds)
    return label


def split_name(ann_file: str | Path) -> str:
    """``instances_val2017.json`` → ``val2017``; other names → their stem."""
    name = Path(ann_file).name
    m = _INSTANCES.match(name)
    return m.group(1) if m else Path(name).stem


def _label(
    coco: Any,
    img_id: int,
    cmap: dict[int, int],
    ann_file: Path,
    stats: Counter[str] | None = None,
    skipped: list[dict[str, Any]] | None = None,
) -> np.ndarray:
    return semantic_mask(coco, img_id, cmap, stats, ann_file, skipped)


def _find_ann(root: Path, split: str | Path | None) -> Path | None:
    dirs = (root / "annotations", root)
    if split is not None:
        for d in dirs:
            if (d / f"instances_{split}.json").is_file():
                return d / f"instances_{split}.json"
        return None
    found = sorted({p for d in dirs for p in d.glob("instances_*.json")})
    if len(found) > 1:
        names = ", ".join(p.name for p in found)
        raise DatasetError(
            root, f"several annotation files ({names}); pick one with --split or coco:DIR:FILE"
        )
    if not found:
        raise DatasetError(root, "no annotations/instances_*.json; give one with coco:DIR:FILE.json")
    return found[0]


def _image_path(root: Path, split: str, file_name: str) -> Path | None:
    for cand in (root / split / file_name, root / "images" / split / file_name, root / file_name):
        if cand.is_file():
            return cand
    return None


def _parse_arg(arg: str) -> tuple[Path, Path | None]:
    head, sep, tail = arg.rpartition(":")
    if not sep or not tail.endswith(".json"):
        return check_root(arg), None
    root = check_root(head)
    ann = Path(tail)
    for cand in (ann, root / ann, root / "annotations" / ann):
        if cand.is_file():
            return root, cand
    raise DatasetError(
        ann, f"COCO annotation file not found (also looked in {root} and {root / 'annotations'})"
    )


def open_coco(arg: str, split: str | Path | None = None) -> DataSource:
    """``coco:DIR`` or ``coco:DIR:ANN.json``.

    The annotation file is ANN, else ``DIR/annotations/instances_<split>.json``, else the only
    ``instances_*.json`` there. Images are looked up in ``DIR/<split>/``, ``DIR/images/<split>/`` and ``DIR/``
    where ``<split>`` comes from the file name (``instances_val2017.json`` → ``val2017``). Labels are
    generated from the JSON on demand (``Sample.label_loader``). Sample ids are the image file names
    without extension, samples sorted by COCO image id.

    When ``split`` names no instances file but a UniMatch split file (lines like
    ``val2017/x.jpg masks/val2017/x.png``), samples come from that file and its mask PNGs instead.

    Raises:
        DatasetError: no/ambiguous annotation file, invalid JSON, unknown category id, missing image.
    """
    root, ann = _parse_arg(arg)
    if ann is None:
        ann = _find_ann(root, split)
        if ann is None and split is not None:
            split_file = find_split(split, root)
            samples = []
            for e in read_split(split_file):
                image, label = resolve_entry(e, root, split_file)
                samples.append(Sample(image.stem, image, label))
            return DataSource("coco", root, samples)
    coco = load_coco(ann)
    cmap = category_map(coco)
    sub = split_name(ann)
    samples = []
    stats: Counter[str] = Counter()  # dropped polygons / annotations, as labels are generated
    skipped: list[dict[str, Any]] = []  # each dropped annotation: id, image, reason
    for img_id in sorted(coco.imgs):
        fn = coco.imgs[img_id]["file_name"]
        image = _image_path(root, sub, fn)
        if image is None:
            raise DatasetError(ann, f"image id {img_id}: '{fn}' not found in {root / sub}")
        sid = str(PurePosixPath(fn).with_suffix(""))
        samples.append(Sample(sid, image, None, partial(_label, coco, img_id, cmap, ann, stats, skipped)))
    return DataSource("coco", root, samples, class_names(coco), stats, skipped)


def convert_coco(
    ann_file: str | Path, out_dir: str | Path, *, split: str | None = None, force: bool = False
) -> dict[str, Any]:
    """Write one palette PNG per image to ``OUT/masks/<split>/<stem>.png`` (UniMatch layout), atomically.

    Args:
        ann_file: instances JSON.
        out_dir: usually the COCO root, so split lines read ``val2017/x.jpg masks/val2017/x.png``.
        split: sub-folder name; default from the file name (``instances_val2017.json`` → ``val2017``).
        force: replace existing mask files (otherwise refuse before writing anything).

    Returns:
        ``{"images", "out", "split", "num_classes", "stats"}``; ``stats`` counts painted, crowd and
        dropped annotations/polygons, and lists each dropped annotation under ``skipped_annotations``
        (``{"annotation": id, "image": file name, "reason": ...}``).

    Raises:
        DatasetError: as :func:`load_coco`. OutputExistsError: a mask exists and ``force`` is false.
    """
    coco = load_coco(ann_file)
    cmap = category_map(coco)
    sub = split or split_name(ann_file)
    out = Path(out_dir) / "masks" / sub
    targets = {i: out / f"{PurePosixPath(coco.imgs[i]['file_name']).stem}.png" for i in sorted(coco.imgs)}
    if len(set(targets.values())) != len(targets):
        raise DatasetError(ann_file, "two images share a file stem; their masks would collide")
    existing = [t for t in targets.values() if t.exists()]
    if existing and not force:
        raise OutputExistsError(
            existing[0], f"{len(existing)} mask(s) already exist; pass --force to replace"
        )
    stats: Counter[str] = Counter()
    skipped: list[dict[str, Any]] = []
    written: list[Path] = []
    made = [d for d in (out, out.parent) if not d.exists()]  # innermost first
    try:
        for img_id, target in targets.items():
            fresh = not target.exists()
            write_label(target, semantic_mask(coco, img_id, cmap, stats, ann_file, skipped))
            if fresh:
                written.append(target)
    except BaseException:  # a failed conversion leaves no partial set of masks behind
        for t in written:
            t.unlink(missing_ok=True)
        for d in made:  # and no empty masks/<split>/ folders it made
            with contextlib.suppress(OSError):
                d.rmdir()
        raise
    return {
        "images": len(targets),
        "out": str(out),
        "split": sub,
        "num_classes": len(cmap) + 1,
        "stats": {**dict(sorted(stats.items())), "skipped_annotations": skipped},
    }
