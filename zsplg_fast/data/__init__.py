"""Data layer: image and label IO, dataset sources, split files.

``synthetic`` (the toy world generator) is imported on its own: ``zsplg_fast.data.synthetic``.
"""

from __future__ import annotations

from zsplg_fast.data.images import LoadStats, load_image
from zsplg_fast.data.labels import IGNORE_INDEX, VOC_PALETTE, check_pair, colorize, read_label, write_label
from zsplg_fast.data.sources import SOURCES, DataSource, Sample, open_source, output_name, shard
from zsplg_fast.data.splits import SPLIT_NAMES, SplitEntry, read_split, write_split

__all__ = [
    "IGNORE_INDEX",
    "SOURCES",
    "SPLIT_NAMES",
    "VOC_PALETTE",
    "DataSource",
    "LoadStats",
    "Sample",
    "SplitEntry",
    "check_pair",
    "colorize",
    "load_image",
    "open_source",
    "output_name",
    "read_label",
    "read_split",
    "shard",
    "write_label",
    "write_split",
]
