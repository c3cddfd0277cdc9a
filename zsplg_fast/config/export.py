"""Export / build sections of the config. Owned by the export work (issue 3); extended there."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class ExportConfig:
    """Placeholder until the export section lands."""
