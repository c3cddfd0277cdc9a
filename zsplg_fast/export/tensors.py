"""Tensor declarations shared by export specs, sidecars and engines: names, dtypes, symbolic axes.

``TensorSpec``, ``Dim`` and ``AxisRange`` live in :mod:`zsplg_runtime.tensors` (the lowest place that
describes an artifact's tensors) and are re-exported here, so that ``export`` (which writes artifacts)
and ``engines`` (which runs them) agree without ``engines`` knowing any model.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from zsplg_runtime.tensors import AxisRange, Dim, TensorSpec, symbolic_axes

__all__ = ["AxisRange", "Dim", "TensorSpec", "Tolerance", "parse_axis_ranges", "symbolic_axes"]


@dataclass(frozen=True)
class Tolerance:
    """How far an exported output may drift from PyTorch.

    Passes when ``max_abs <= atol + rtol * max|reference|`` and ``cosine >= min_cosine``.
    """

    atol: float = 1e-4
    rtol: float = 1e-4
    min_cosine: float = 0.99999

    def describe(self) -> str:
        return f"max abs <= {self.atol:g} + {self.rtol:g}*max|ref|, cosine >= {self.min_cosine}"

    def to_dict(self) -> dict[str, float]:
        return {"atol": self.atol, "rtol": self.rtol, "min_cosine": self.min_cosine}


def parse_axis_ranges(items: Sequence[str], key: str = "export.profiles") -> dict[str, AxisRange]:
    """Parse ``["batch=1:8:32", "num_points=1"]`` into axis ranges (one number = min=opt=max)."""
    from zsplg_fast.config.export import parse_profile

    out: dict[str, AxisRange] = {}
    for i, item in enumerate(items):
        name, lo, mid, hi = parse_profile(item, f"{key}[{i}]")
        out[name] = AxisRange(lo, mid, hi)
    return out
