"""Tensor declarations shared by export specs, sidecars and engines: names, dtypes, symbolic axes.

The lowest place that describes an artifact's tensors, so that ``zsplg_fast.export`` (which writes
artifacts), ``zsplg_fast.engines`` and this runtime (which run them) agree without knowing any model.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from zsplg_runtime.errors import ConfigError

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


Shapes = dict[str, tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]]


def plan_profiles(inputs: Sequence[TensorSpec], ranges: Mapping[str, AxisRange]) -> Shapes:
    """min/opt/max shapes per input from its symbolic axes.

    Args:
        inputs: the artifact's inputs (fixed ints and symbolic axis names).
        ranges: axis name → min/opt/max (sidecar defaults ← config ← CLI).
    Returns:
        input name → (min shape, opt shape, max shape); inputs without dynamic axes included.
    Raises:
        ConfigError: a dynamic axis without a range, naming the axis and the input.
    """
    out: Shapes = {}
    for s in inputs:
        lo, mid, hi = [], [], []
        for d in s.shape:
            if isinstance(d, int):
                lo.append(d), mid.append(d), hi.append(d)
                continue
            if d not in ranges:
                raise ConfigError(
                    "export.profiles",
                    d,
                    f"dynamic axis '{d}' of input '{s.name}' has no profile",
                    valid=f"add --profile {d}=MIN:OPT:MAX",
                )
            r = ranges[d]
            lo.append(r.min), mid.append(r.opt), hi.append(r.max)
        out[s.name] = (tuple(lo), tuple(mid), tuple(hi))
    return out


def resolve_ranges(
    sidecar: Mapping[str, Any], overrides: Mapping[str, AxisRange] | None = None
) -> dict[str, AxisRange]:
    """Axis ranges: the sidecar's spec defaults, overridden by config/CLI ``overrides``."""
    ranges = {k: AxisRange(*v) for k, v in sidecar.get("profiles", {}).items()}
    ranges.update(overrides or {})
    return ranges


def spec_profiles(side: Mapping[str, Any]) -> Shapes:
    """Input name → (min, opt, max) shapes from the sidecar's profiles ({} when it declares none, or an
    axis has no range)."""
    inputs = [TensorSpec.from_dict(d) for d in side.get("inputs", [])]
    if not inputs or not side.get("profiles"):
        return {}
    try:
        return dict(plan_profiles(inputs, resolve_ranges(side)))
    except ConfigError:
        return {}
