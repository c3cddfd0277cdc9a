"""COCO instances JSON: one annotation per SAM mask, with its CLIP class, score, margin and RLE.

Each annotation is the mask's visible part in the label (paint order large → small), so the annotations
of an image never overlap and painting them back gives the label PNG exactly; pycocotools encodes the
RLE. Background masks are written (category 0 ``background``) only when the folder paints uncovered
pixels ``ignore``, where they are needed to tell background from uncovered. Older folders without the
masks in meta get one annotation per connected region of each class instead (noted in the summary).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import numpy as np

from zsplg_fast.data.coco_checks import check_instances, clean_polygon, is_number
from zsplg_fast.errors import DatasetError
from zsplg_fast.review.folder import Item, class_regions, visible_masks
from zsplg_fast.review.formats.base import ExportContext, Format, ImportContext, image_name, strip_suffix
from zsplg_fast.utils.io import atomic_write_json

FILE = "instances.json"


def _parts(it: Item, label: np.ndarray, with_background: bool) -> tuple[list[Any], bool]:
    parts = visible_masks(label, it.meta(), include_background=with_background)
    return (class_regions(label), False) if parts is None else (parts, True)


def export_coco(ctx: ExportContext) -> dict[str, Any]:
    """Write ``ctx.out/instances.json`` (images, categories, annotations with RLE and score)."""
    from pycocotools import mask as mask_utils

    classes = ctx.folder.classes
    with_bg = ctx.folder.uncovered == "ignore"
    cats = [{"id": k, "name": n, "supercategory": "object"} for k, n in enumerate(classes) if k or with_bg]
    images, anns, degraded = [], [], 0
    for n, it in enumerate(ctx.items, 1):
        label = it.label()
        h, w = label.shape
        images.append({"id": n, "file_name": image_name(it), "width": int(w), "height": int(h)})
        parts, exact = _parts(it, label, with_bg)
        degraded += not exact
        for cls, score, vis in parts:
            rle = mask_utils.encode(np.asfortranarray(vis.astype(np.uint8)))
            anns.append(
                {
                    "id": len(anns) + 1,
                    "image_id": n,
                    "category_id": int(cls),
                    "segmentation": {"size": [int(h), int(w)], "counts": rle["counts"].decode()},
                    "area": float(mask_utils.area(rle)),
                    "bbox": [float(x) for x in mask_utils.toBbox(rle)],
                    "iscrowd": 0,
                    "score": round(float(score), 5),
                }
            )
    if degraded:
        ctx.notes.append(
            f"{degraded} of {len(ctx.items)} images' meta lacks the SAM masks ('rle'): their annotations "
            "are connected regions of each class, not SAM masks"
        )
    info = {"description": f"zsplg-fast labels of {ctx.folder.root}", "uncovered": ctx.folder.uncovered}
    atomic_write_json(
        ctx.out / FILE, {"info": info, "images": images, "categories": cats, "annotations": anns}, indent=None
    )
    return {"file": FILE, "images": len(images), "annotations": len(anns)}


def _rle(a: dict[str, Any], h: int, w: int, src: Any) -> Any:
    """pycocotools RLE of one annotation (polygons merged); DatasetError naming the annotation when its
    polygons are not drawable or its RLE does not decode."""
    from pycocotools import mask as mask_utils

    seg = a["segmentation"]
    try:
        if isinstance(seg, list):
            bad = [why for poly in seg if (why := clean_polygon(poly, (h, w))) is not None]
            if bad or any(len(poly) < 6 or len(poly) % 2 for poly in seg):
                raise ValueError(f"polygons must be lists of 6+ finite numbers near the image ({bad[:1]})")
            rle = mask_utils.merge(mask_utils.frPyObjects(seg, h, w)) if seg else None
        elif isinstance(seg["counts"], list):
            rle = mask_utils.frPyObjects(seg, h, w)
        else:
            rle = {"size": seg["size"], "counts": seg["counts"].encode()}
        return None if rle is None else mask_utils.decode(rle)
    except (ValueError, TypeError, OverflowError) as e:
        raise DatasetError(src, f"annotation {a['id']}: segmentation cannot be decoded ({e})") from e


def import_coco(ctx: ImportContext) -> Iterator[tuple[str, np.ndarray | None]]:
    """Yield (id, label) from a COCO instances JSON: annotations painted large → small by area."""
    try:
        data = json.loads(ctx.source.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError) as e:  # UnicodeDecodeError and JSONDecodeError included
        raise DatasetError(ctx.source, f"not a COCO instances JSON ({type(e).__name__}: {e})") from e
    if isinstance(data, dict):
        data.setdefault("annotations", [])  # images without any shape: all uncovered
    check_instances(ctx.source, data)  # types, ids, sizes, RLE sizes: pycocotools trusts them
    images = {i["id"]: i for i in data["images"]}
    cats = {c["id"]: c["name"] for c in data["categories"]}
    anns = data["annotations"]
    unknown_ids = sorted({a["category_id"] for a in anns} - set(cats))
    if unknown_ids:
        raise DatasetError(
            ctx.source, f"annotations use category ids {unknown_ids[:10]} that 'categories' does not declare"
        )
    index = {n: v for v, n in enumerate(ctx.classes)}
    foreign = sorted(n for n in cats.values() if n not in index)
    if foreign:
        raise DatasetError(ctx.source, f"categories {foreign} are not among the classes {ctx.classes}")
    order = [n for _, n in sorted(cats.items()) if n != ctx.classes[0]]
    if ctx.check_order and order != [n for n in ctx.classes[1:] if n in order]:
        raise DatasetError(
            ctx.source,
            f"categories are in another order ({order}) than --classes ({ctx.classes}); "
            "pass the label folder it was exported from to --classes (classes are then matched by name)",
        )
    by_image: dict[int, list[dict[str, Any]]] = {}
    for a in anns:
        if not is_number(a.get("area", 0)):
            raise DatasetError(ctx.source, f"annotation {a['id']}: 'area' must be a number")
        by_image.setdefault(a["image_id"], []).append(a)
    for iid, img in images.items():
        sid = strip_suffix(img["file_name"])
        if ctx.known_ids is not None and sid not in ctx.known_ids:
            raise DatasetError(ctx.source, f"image {img['file_name']!r} is not in the label folder")
        h, w = int(img["height"]), int(img["width"])
        label = np.full((h, w), ctx.fill, np.uint8)
        group = sorted(by_image.get(iid, []), key=lambda a: -float(a.get("area", 0)))
        for a in group:
            m = _rle(a, h, w, ctx.source)
            if m is not None:
                label[m > 0] = index[cats[a["category_id"]]]
        yield sid, label


FORMAT = Format("coco", "COCO instances JSON (RLE)", export_coco, import_coco)
