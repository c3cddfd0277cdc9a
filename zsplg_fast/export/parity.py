"""Numeric parity between an artifact's outputs and PyTorch's: max abs, max rel, cosine per output."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from zsplg_fast.export.tensors import Tolerance


@dataclass(frozen=True)
class Parity:
    """Drift of one output (worst over the validation sets).

    ``max_rel`` = max abs / max |reference| (relative to the output's scale, robust near zero);
    ``cosine`` of the flattened tensors (1.0 when both are all zeros).
    """

    output: str
    max_abs: float
    max_rel: float
    cosine: float
    ref_absmax: float
    passed: bool
    tolerance: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def compare(name: str, ref: np.ndarray, got: np.ndarray, tol: Tolerance) -> Parity:
    """Parity of ``got`` against ``ref`` (same shape; any numeric dtype, compared in float64)."""
    r = np.asarray(ref, dtype=np.float64).ravel()
    g = np.asarray(got, dtype=np.float64).ravel()
    if r.shape != g.shape:
        return Parity(name, float("inf"), float("inf"), -1.0, 0.0, False, f"size {g.size} vs {r.size}")
    diff = float(np.max(np.abs(r - g))) if r.size else 0.0
    scale = float(np.max(np.abs(r))) if r.size else 0.0
    nr, ng = float(np.linalg.norm(r)), float(np.linalg.norm(g))
    if nr == 0.0 and ng == 0.0:
        cos = 1.0
    elif nr == 0.0 or ng == 0.0:
        cos = 0.0
    else:
        cos = float(np.dot(r, g) / (nr * ng))
    rel = diff / scale if scale > 0 else (0.0 if diff == 0 else float("inf"))
    ok = bool(np.isfinite(diff) and diff <= tol.atol + tol.rtol * scale and cos >= tol.min_cosine)
    return Parity(name, diff, rel, cos, scale, ok, tol.describe())


def worst(items: Sequence[Parity]) -> Parity:
    """One output's parity over several validation sets: max drift, min cosine, passed only if all did."""
    if not items:
        raise ValueError("worst() needs at least one Parity")
    first = items[0]
    return Parity(
        first.output,
        max(p.max_abs for p in items),
        max(p.max_rel for p in items),
        min(p.cosine for p in items),
        max(p.ref_absmax for p in items),
        all(p.passed for p in items),
        first.tolerance,
    )
