"""Typed config: dataclass sections, YAML loading with dotted overrides, validation, fingerprints."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from zsplg_fast.config.labeling import AmgConfig, ClassifyConfig, DataConfig, LabelJobConfig
from zsplg_fast.config.loader import fingerprint, from_dict, load, parse_overrides, to_dict
from zsplg_fast.config.models import ClipConfig, SamConfig
from zsplg_fast.config.root import Config


def load_config(path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> Config:
    """Defaults ← YAML ``path`` ← dotted ``overrides`` (e.g. ``{"amg.points_per_side": 16}``)."""
    return load(Config, path, overrides)


__all__ = [
    "AmgConfig",
    "ClassifyConfig",
    "ClipConfig",
    "Config",
    "DataConfig",
    "LabelJobConfig",
    "SamConfig",
    "fingerprint",
    "from_dict",
    "load_config",
    "parse_overrides",
    "to_dict",
]
