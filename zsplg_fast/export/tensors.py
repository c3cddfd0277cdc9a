"""Tensor declarations shared by export specs, sidecars and engines: names, dtypes, symbolic axes.

This module is the lowest place that describes an artifact's tensors, so that ``export`` (which
writes artifacts) and ``engines`` (which runs them) agree without ``engines`` knowing any model.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from zsplg_fast.errors import ConfigError

Dim = int | str  # a fixed size, or a symbolic axis name such as "batch"


@dataclass(frozen=True)
class TensorSpec:
    """Name, dtype and shape of one artifact input or output.

    ``shape`` entries are ints (fixed) or strings (symbolic axes, e.g. ``"batch"``); inputs that
    share an axis name must agree at run time. ``allow_float64`` lets float64 feeds be cast to
    float32 for this input (engines refuse them otherwise).
    """

    name: str
    dtype: str  # numpy dtype name: "float32", "int64", "uint8", ...
    shape: tuple[Dim, ...]
    allow_float64: bool = False

    @property
    def symbolic_axes(self) -> dict[int, str]:
        """Axis index → symbolic name, for the dynamic axes only."""
        return {i: d for i, d in enumerate(self.shape) if isinstance(d, str)}

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"name": self.name, "dtype": self.dtype, "shape": list(self.shape)}
        if self.allow_float64:
            d["allow_float64"] = True
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TensorSpec:
        return cls(d["name"], d["dtype"], tuple(d["shape"]), bool(d.get("allow_float64", False)))


def symbolic_axes(specs: Sequence[TensorSpec]) -> list[str]:
    """Every distinct symbolic axis name used by ``specs``, in first-seen order."""
    seen: list[str] = []
    for s in specs:
        for d in s.shape:
            if isinstance(d, str) and d not in seen:
                seen.append(d)
    return seen


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


@dataclass(frozen=True)
class AxisRange:
    """min / opt / max size of one symbolic axis (a TensorRT optimisation-profile entry)."""

    min: int
    opt: int
    max: int

    def __post_init__(self) -> None:
        if not (1 <= self.min <= self.opt <= self.max):
            raise ConfigError(
                "export.profiles", f"{self.min}:{self.opt}:{self.max}", "need 1 <= min <= opt <= max"
            )

    def to_list(self) -> list[int]:
        return [self.min, self.opt, self.max]


def parse_axis_ranges(items: Sequence[str], key: str = "export.profiles") -> dict[str, AxisRange]:
    """Parse ``["batch=1:8:32", "num_points=1"]`` into axis ranges (one number = min=opt=max)."""
    from zsplg_fast.config.export import parse_profile

    out: dict[str, AxisRange] = {}
    for i, item in enumerate(items):
        name, lo, mid, hi = parse_profile(item, f"{key}[{i}]")
        out[name] = AxisRange(lo, mid, hi)
    return out
