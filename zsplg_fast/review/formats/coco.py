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


def import_coco(ctx: ImportContext) -> Iterator[tuple[str, np.ndarray | None]]:
    """Yield (id, label) from a COCO instances JSON: annotations painted large → small by area."""
    from pycocotools import mask as mask_utils

    try:
        data = json.loads(ctx.source.read_text())
        images = {int(i["id"]): i for i in data["images"]}
        cats = {int(c["id"]): str(c["name"]) for c in data["categories"]}
        anns = data.get("annotations", [])
    except (OSError, json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
        raise DatasetError(ctx.source, f"not a COCO instances JSON ({type(e).__name__}: {e})") from e
    unknown_ids = sorted({int(a["category_id"]) for a in anns} - set(cats))
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
        if int(a["image_id"]) not in images:
            raise DatasetError(
                ctx.source, f"annotation {a.get('id')} is for unknown image id {a['image_id']}"
            )
        by_image.setdefault(int(a["image_id"]), []).append(a)
    for iid, img in images.items():
        sid = strip_suffix(str(img["file_name"]))
        if ctx.known_ids is not None and sid not in ctx.known_ids:
            raise DatasetError(ctx.source, f"image {img['file_name']!r} is not in the label folder")
        h, w = int(img["height"]), int(img["width"])
        label = np.full((h, w), ctx.fill, np.uint8)
        group = sorted(by_image.get(iid, []), key=lambda a: -float(a.get("area", 0)))
        for a in group:
            seg = a["segmentation"]
            if isinstance(seg, list):
                rle = mask_utils.merge(mask_utils.frPyObjects(seg, h, w))
            elif isinstance(seg.get("counts"), list):
                rle = mask_utils.frPyObjects(seg, h, w)
            else:
                rle = {"size": seg["size"], "counts": seg["counts"].encode()}
            label[mask_utils.decode(rle) > 0] = index[cats[int(a["category_id"])]]
        yield sid, label


FORMAT = Format("coco", "COCO instances JSON (RLE)", export_coco, import_coco)
