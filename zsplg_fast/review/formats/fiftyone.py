"""FiftyOne ``ImageSegmentationDirectory``: ``data/`` (the images) + ``labels/`` (masks) + mask targets.

Follows FiftyOne's documented layout (``fiftyone.types.ImageSegmentationDirectory``): ``data/<name>`` and
``labels/<id>.png`` with the same stem, masks as single-channel 8-bit PNGs whose values are the class
indices; the mask targets (value → class name, ``255`` → ``ignore``) go to ``mask_targets.json``, to pass
as ``mask_targets=`` when importing::

    fo.Dataset.from_dir(dataset_dir=OUT, dataset_type=fo.types.ImageSegmentationDirectory,
                        label_field="zero_shot")
"""

from __future__ import annotations

import shutil
from typing import Any

from PIL import Image

from zsplg_fast.review.folder import class_names_with_ignore
from zsplg_fast.review.formats.base import ExportContext, Format, image_name
from zsplg_fast.utils.io import atomic_path, atomic_write_json


def export_fiftyone(ctx: ExportContext) -> dict[str, Any]:
    """Write ``data/``, ``labels/`` and ``mask_targets.json`` into ``ctx.out``."""
    copied = 0
    for it in ctx.items:
        label = it.label()
        with atomic_path(ctx.out / "labels" / f"{it.id}.png") as tmp:
            Image.fromarray(label, mode="L").save(tmp, format="PNG")
        if it.image_path is not None and it.image_path.is_file():
            with atomic_path(ctx.out / "data" / image_name(it)) as tmp:
                shutil.copyfile(it.image_path, tmp)
            copied += 1
    if copied < len(ctx.items):
        ctx.notes.append(
            f"{len(ctx.items) - copied} of {len(ctx.items)} source images not found: data/ lacks them"
        )
    targets = {str(v): n for v, n in class_names_with_ignore(ctx.folder.classes).items()}
    atomic_write_json(ctx.out / "mask_targets.json", targets)
    return {"images": copied, "masks": len(ctx.items), "mask_targets": "mask_targets.json"}


FORMAT = Format("fiftyone", "FiftyOne (ImageSegmentationDirectory)", export_fiftyone)
