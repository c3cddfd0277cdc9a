"""What every format module provides: an exporter and, for the tools people correct labels in, an importer."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from zsplg_fast.review.folder import Item, LabelFolder


@dataclass
class ExportContext:
    """One export: the label folder, the items to write (all, or the review's top N), the output folder.

    ``image_prefix``: URL prefix of the images for tools that load them by URL (Label Studio);
    ``model_version``: recorded with predictions; ``notes``: messages for the summary (degraded fields).
    """

    folder: LabelFolder
    items: list[Item]
    out: Path
    image_prefix: str = "/data/local-files/?d="
    model_version: str = "zsplg-fast"
    notes: list[str] = field(default_factory=list)


@dataclass
class ImportContext:
    """One import: the file or archive, the class names (index = label value), the known image ids
    (None: any), what uncovered pixels become (0 or 255) and a scratch folder for archives.

    Classes are matched by name. ``check_order``: the class names came from a file or list, not from a
    label folder's manifest, so a source whose own class order differs (CVAT labelmap, COCO category
    ids) is refused rather than trusted."""

    source: Path
    classes: list[str]
    known_ids: set[str] | None
    fill: int
    scratch: Path
    image_prefix: str = "/data/local-files/?d="
    check_order: bool = False


Exporter = Callable[[ExportContext], dict[str, Any]]
"""Writes ``ctx.out``; returns JSON-able figures (counts, lost IoU) for ``export.json``."""

Importer = Callable[[ImportContext], Iterator[tuple[str, np.ndarray | None]]]
"""Yields (image id, (H, W) uint8 label in {0..C-1, 255}) for every image the source holds; None when the
source holds no shape for that image (all uncovered: the folder's label gives the size)."""


@dataclass(frozen=True)
class Format:
    """A registered format: ``name`` (the CLI's --format), what the tool is, exporter, optional importer."""

    name: str
    tool: str
    exporter: Exporter
    importer: Importer | None = None


def image_name(item: Item) -> str:
    """The image's file name relative to the dataset: ``<id><image suffix>`` (``.jpg`` when unknown)."""
    suffix = item.image_path.suffix if item.image_path is not None and item.image_path.suffix else ".jpg"
    return f"{item.id}{suffix}"


def strip_suffix(name: str) -> str:
    """``a/b/c.jpg`` → ``a/b/c`` (the id of an image file name)."""
    p = Path(name)
    return (p.parent / p.stem).as_posix() if p.parent != Path(".") else p.stem
