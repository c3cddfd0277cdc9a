"""Training sections of the config (UniMatch, fusion, supervised training, evaluation).

Owned by the training work (issue 5); extended there.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class TrainConfig:
    """Placeholder until the training section lands."""
