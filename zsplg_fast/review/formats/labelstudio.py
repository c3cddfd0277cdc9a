"""Label Studio: a tasks JSON with ``predictions`` of ``BrushLabels`` in Label Studio's own brush RLE.

The brush RLE is not COCO RLE (label-studio#6553): it packs RGBA bytes of the whole image. We encode and
decode with Label Studio's own converter (``label_studio_converter.brush.mask2rle`` / ``decode_rle``).
One result per class present in the label (exact round trip), scored by the mean CLIP score of that
class's masks; background is what no brush covers. ``label_config.xml`` is the matching labeling config.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from html import escape
from typing import Any
from urllib.parse import quote, unquote

import numpy as np

from zsplg_fast.errors import DatasetError, MissingDependencyError
from zsplg_fast.review.folder import class_names_with_ignore
from zsplg_fast.review.formats.base import ExportContext, Format, ImportContext, image_name, strip_suffix
from zsplg_fast.utils.io import atomic_write_json, atomic_write_text

FROM_NAME, TO_NAME = "tag", "image"
INSTALL = "pip install 'zsplg-fast[review]' (label-studio-converter)"


def _brush() -> Any:
    try:
        from label_studio_converter import brush
    except ImportError as e:
        raise MissingDependencyError("label-studio-converter", "Label Studio brush RLE", INSTALL) from e
    return brush


def label_config(classes: list[str]) -> str:
    """The labeling config (XML) with one BrushLabels label per class except background, plus ignore."""
    names = [n for v, n in class_names_with_ignore(classes).items() if v != 0]
    labels = "\n".join(f'    <Label value="{escape(n)}"/>' for n in names)
    return (
        f'<View>\n  <Image name="{TO_NAME}" value="$image" zoom="true"/>\n'
        f'  <BrushLabels name="{FROM_NAME}" toName="{TO_NAME}">\n{labels}\n  </BrushLabels>\n</View>\n'
    )


def export_labelstudio(ctx: ExportContext) -> dict[str, Any]:
    """Write ``tasks.json`` and ``label_config.xml`` into ``ctx.out``."""
    brush = _brush()
    names = class_names_with_ignore(ctx.folder.classes)
    tasks, results_n = [], 0
    for it in ctx.items:
        label, meta = it.label(), it.meta()
        h, w = label.shape
        scores: dict[int, list[float]] = {}
        for m in meta.get("masks", []):
            scores.setdefault(int(m.get("class", 0)), []).append(float(m.get("score", 1.0)))
        results = []
        for v in (int(x) for x in np.unique(label) if x != 0):
            rle = brush.mask2rle(((label == v) * 255).astype(np.uint8))
            s = scores.get(v)
            results.append(
                {
                    "id": f"c{v}",
                    "from_name": FROM_NAME,
                    "to_name": TO_NAME,
                    "type": "brushlabels",
                    "original_width": int(w),
                    "original_height": int(h),
                    "image_rotation": 0,
                    "value": {"format": "rle", "rle": [int(b) for b in rle], "brushlabels": [names[v]]},
                    **({"score": round(float(np.mean(s)), 5)} if s else {}),
                }
            )
        results_n += len(results)
        all_scores = [x for v in scores.values() for x in v]
        tasks.append(
            {
                "data": {"image": ctx.image_prefix + quote(image_name(it), safe="/"), "zsplg_id": it.id},
                "predictions": [
                    {
                        "model_version": ctx.model_version,
                        "score": round(float(np.mean(all_scores)), 5) if all_scores else 0.0,
                        "result": results,
                    }
                ],
            }
        )
    atomic_write_json(ctx.out / "tasks.json", tasks, indent=1)
    atomic_write_text(ctx.out / "label_config.xml", label_config(ctx.folder.classes))
    return {"tasks": "tasks.json", "images": len(tasks), "results": results_n}


def _task_id(task: dict[str, Any], prefix: str) -> str | None:
    data = task.get("data", {})
    if isinstance(data.get("zsplg_id"), str):
        return data["zsplg_id"]
    url = data.get("image")
    if not isinstance(url, str):
        return None
    return strip_suffix(unquote(url[len(prefix) :] if prefix and url.startswith(prefix) else url))


def _results(task: dict[str, Any]) -> list[dict[str, Any]]:
    anns = [a for a in task.get("annotations", []) if not a.get("was_cancelled")]
    if anns:
        return anns[-1].get("result", [])  # the latest annotation: the correction
    preds = task.get("predictions", [])
    return preds[0].get("result", []) if preds else []


def import_labelstudio(ctx: ImportContext) -> Iterator[tuple[str, np.ndarray | None]]:
    """Yield (id, label) from a Label Studio JSON export (annotations, else predictions)."""
    brush = _brush()
    try:
        tasks = json.loads(ctx.source.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise DatasetError(ctx.source, f"not a Label Studio JSON export ({e})") from e
    if not isinstance(tasks, list):
        raise DatasetError(ctx.source, "not a Label Studio JSON export: expected a list of tasks")
    by_name = {n: v for v, n in class_names_with_ignore(ctx.classes).items()}
    ids = [_task_id(t, ctx.image_prefix) for t in tasks]
    if ctx.known_ids is not None:
        unknown = [i for i in ids if i not in ctx.known_ids]
        if unknown:
            raise DatasetError(
                ctx.source,
                f"{len(unknown)} of {len(ids)} tasks are for images not in the label folder "
                f"(e.g. {unknown[:3]}); check --image-prefix or export these tasks from this folder",
            )
    for n, (sid, task) in enumerate(zip(ids, tasks, strict=True)):
        if sid is None:
            raise DatasetError(ctx.source, f"task {n} has no data.image")
        label: np.ndarray | None = None
        for r in _results(task):
            if r.get("type", "").lower() != "brushlabels":
                continue
            value = r.get("value", {})
            name = (value.get("brushlabels") or [None])[0]
            if name not in by_name:
                raise DatasetError(
                    ctx.source,
                    f"task {n} ({sid}): brush label {name!r} is not among the classes {ctx.classes}",
                )
            h, w = int(r["original_height"]), int(r["original_width"])
            if label is None:
                label = np.full((h, w), ctx.fill, np.uint8)
            flat = brush.decode_rle(value["rle"])
            if flat.size != h * w * 4:
                raise DatasetError(
                    ctx.source, f"task {n} ({sid}): RLE holds {flat.size} bytes, not {h}x{w}x4"
                )
            label[flat.reshape(h, w, 4)[:, :, 3] > 0] = by_name[name]
        yield sid, label  # None: no brush at all (everything uncovered; the size comes from the folder)


FORMAT = Format(
    "labelstudio", "Label Studio (tasks JSON, BrushLabels RLE)", export_labelstudio, import_labelstudio
)
