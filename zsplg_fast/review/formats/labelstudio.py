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
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

import numpy as np

from zsplg_fast.data.coco_checks import check_image_size
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


def _objects(value: Any, what: str, src: Path) -> list[dict[str, Any]]:
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise DatasetError(src, f"{what} must be a list of objects")
    return value


def _results(task: dict[str, Any], n: int, src: Path) -> list[dict[str, Any]]:
    anns = [a for a in _objects(task.get("annotations", []), f"task {n}: 'annotations'", src)]
    anns = [a for a in anns if not a.get("was_cancelled")]
    if anns:  # the latest annotation: the correction
        return _objects(anns[-1].get("result", []), f"task {n}: annotation 'result'", src)
    preds = _objects(task.get("predictions", []), f"task {n}: 'predictions'", src)
    return _objects(preds[0].get("result", []), f"task {n}: prediction 'result'", src) if preds else []


def _check_tasks(tasks: Any, src: Path) -> list[dict[str, Any]]:
    """The tasks list, each task an object whose ``data`` is an object; DatasetError naming the task."""
    if not isinstance(tasks, list):
        raise DatasetError(src, "not a Label Studio JSON export: expected a list of tasks")
    for n, t in enumerate(tasks):
        if not isinstance(t, dict) or not isinstance(t.get("data", {}), dict):
            raise DatasetError(src, f"task {n} is not an object with a 'data' object")
    return tasks


def _brush_mask(brush: Any, r: dict[str, Any], where: str, src: Path) -> tuple[str | None, np.ndarray]:
    """(class name, (H, W) bool) of one brushlabels result; DatasetError naming the task and the key."""
    value = r.get("value")
    if not isinstance(value, dict):
        raise DatasetError(src, f"{where}: 'value' must be an object")
    names = value.get("brushlabels") or [None]
    if not isinstance(names, list):
        raise DatasetError(src, f"{where}: 'brushlabels' must be a list of names")
    keys = ("original_height", "original_width")
    h, w = check_image_size(src, where, r.get(keys[0]), r.get(keys[1]), keys)
    rle = value.get("rle")
    if not isinstance(rle, list) or not all(isinstance(b, int) and 0 <= b <= 255 for b in rle):
        raise DatasetError(src, f"{where}: 'rle' must be a list of bytes (0..255)")
    try:
        flat = np.asarray(brush.decode_rle(rle))
    except (ValueError, IndexError, TypeError) as e:  # the codec's reader runs off a corrupt stream
        raise DatasetError(src, f"{where}: brush RLE cannot be decoded ({type(e).__name__}: {e})") from e
    if flat.size != h * w * 4:
        raise DatasetError(src, f"{where}: RLE holds {flat.size} bytes, not {h}x{w}x4")
    return names[0], flat.reshape(h, w, 4)[:, :, 3] > 0


def import_labelstudio(ctx: ImportContext) -> Iterator[tuple[str, np.ndarray | None]]:
    """Yield (id, label) from a Label Studio JSON export (annotations, else predictions)."""
    brush = _brush()
    try:
        tasks = json.loads(ctx.source.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError) as e:  # UnicodeDecodeError and JSONDecodeError included
        raise DatasetError(ctx.source, f"not a Label Studio JSON export ({type(e).__name__}: {e})") from e
    tasks = _check_tasks(tasks, ctx.source)
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
        for k, r in enumerate(_results(task, n, ctx.source)):
            if str(r.get("type", "")).lower() != "brushlabels":
                continue
            name, mask = _brush_mask(brush, r, f"task {n} ({sid}) result {k}", ctx.source)
            if not isinstance(name, str) or name not in by_name:
                raise DatasetError(
                    ctx.source,
                    f"task {n} ({sid}): brush label {name!r} is not among the classes {ctx.classes}",
                )
            if label is None:
                label = np.full(mask.shape, ctx.fill, np.uint8)
            if mask.shape != label.shape:
                raise DatasetError(
                    ctx.source,
                    f"task {n} ({sid}) result {k}: size {mask.shape} is not the task's {label.shape}",
                )
            label[mask] = by_name[name]
        yield sid, label  # None: no brush at all (everything uncovered; the size comes from the folder)


FORMAT = Format(
    "labelstudio", "Label Studio (tasks JSON, BrushLabels RLE)", export_labelstudio, import_labelstudio
)
