"""Typed config: dataclass sections, YAML loading with dotted overrides, validation, fingerprints."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from zsplg_fast.config.labeling import AmgConfig, ClassifyConfig, DataConfig, LabelJobConfig
from zsplg_fast.config.loader import (
    fingerprint,
    from_dict,
    load_yaml,
    merge_dotted,
    parse_overrides,
    to_dict,
)
from zsplg_fast.config.models import ClipConfig, SamConfig
from zsplg_fast.config.root import Config


def load_config(path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> Config:
    """Defaults ← model presets ← YAML ``path`` ← dotted ``overrides`` (e.g. ``{"amg.points_per_side": 16}``).

    The presets of the chosen ``sam.variant`` / ``clip.model`` fill only keys neither the YAML nor an
    override sets (:mod:`zsplg_fast.config.presets`)."""
    from zsplg_fast.config.presets import with_presets

    data = load_yaml(path) if path is not None else {}
    if overrides:
        data = merge_dotted(data, {k: v for k, v in overrides.items() if v is not None})
    return from_dict(Config, with_presets(data))


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
