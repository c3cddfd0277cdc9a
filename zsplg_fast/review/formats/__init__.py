"""Formats registry: name → :class:`Format` (exporter, importer). Add one with :func:`register_format`."""

from __future__ import annotations

from zsplg_fast.review.formats import coco, cvat, fiftyone, labelstudio, yolo
from zsplg_fast.review.formats.base import ExportContext, Format, ImportContext

FORMATS: dict[str, Format] = {
    f.name: f for f in (cvat.FORMAT, labelstudio.FORMAT, fiftyone.FORMAT, coco.FORMAT, yolo.FORMAT)
}


def register_format(fmt: Format) -> None:
    """Add or replace a format under ``fmt.name``."""
    FORMATS[fmt.name] = fmt


__all__ = ["FORMATS", "ExportContext", "Format", "ImportContext", "register_format"]
