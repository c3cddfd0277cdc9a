"""The shape of an export spec, and a spec bound to one model (``Prepared``).

A spec is sizes-agnostic: ``prepare(model, **options)`` reads sizes from the model (SAM image size,
embedding grid, CLIP width...) and returns everything the exporter needs. Validation inputs must differ
from the dummy (export) inputs in EVERY dynamic axis, so that a size baked into the graph at export
time shows up as drift or a shape error; :func:`check_validation_inputs` enforces it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from zsplg_fast.errors import ConfigError
from zsplg_fast.export.tensors import AxisRange, TensorSpec, Tolerance

EXPORTERS = ("dynamo", "legacy")


@dataclass
class Prepared:
    """A spec bound to one model: the module to export and its tensors.

    Attributes:
        module: the wrapper ``nn.Module`` in eval mode; forward argument names == input names.
        inputs / outputs: tensor declarations (symbolic axes as strings).
        dummy: input name → tensor used for export (dynamic axes ≥ 2, so dynamo does not specialise).
        validation: input sets compared ONNX vs PyTorch; each differs from ``dummy`` in every dynamic axis.
        tolerances: output name → allowed drift.
        profiles: default TensorRT min/opt/max per symbolic input axis.
        dim_bounds: symbolic axis → (min, max) given to ``torch.export.Dim`` (None = unbounded).
        metadata: recorded in the sidecar (preprocessing, class names, palette, model facts).
        options: the spec options used, so a backend can rebuild the same module.
    """

    module: nn.Module
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    dummy: dict[str, torch.Tensor]
    validation: list[dict[str, torch.Tensor]]
    tolerances: dict[str, Tolerance]
    profiles: dict[str, AxisRange] = field(default_factory=dict)
    dim_bounds: dict[str, tuple[int | None, int | None]] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)
    name: str = ""
    family: str = ""
    exporter: str = "dynamo"
    exporter_reason: str = ""


@dataclass(frozen=True)
class ExportSpec:
    """One artifact kind.

    Attributes:
        name: registry key and artifact file stem (``export/<name>.onnx``).
        family: which model it consumes: ``"sam"`` (a ``Sam``), ``"clip"`` (a ``ClipBundle``),
            ``"segmenter"`` (a ``DeepLabV3Plus`` plus its checkpoint dict).
        summary: one line for ``inspect`` and the README.
        prepare: ``prepare(model, **options) -> Prepared``.
        exporter: preferred exporter, ``"dynamo"`` or ``"legacy"``; ``exporter_reason`` says why.
    """

    name: str
    family: str
    summary: str
    prepare: Callable[..., Prepared]
    exporter: str = "dynamo"
    exporter_reason: str = ""

    def bind(self, model: Any, **options: Any) -> Prepared:
        """Prepare this spec for ``model`` and stamp name, family and preferred exporter."""
        p = self.prepare(model, **options)
        p.name, p.family = self.name, self.family
        p.exporter, p.exporter_reason = self.exporter, self.exporter_reason
        p.module.eval()
        check_validation_inputs(p)
        return p


def axis_sizes(specs: Sequence[TensorSpec], feeds: Mapping[str, torch.Tensor]) -> dict[str, int]:
    """Symbolic axis name → its size in ``feeds``."""
    out: dict[str, int] = {}
    for s in specs:
        for axis, name in s.symbolic_axes.items():
            out.setdefault(name, int(feeds[s.name].shape[axis]))
    return out


def check_validation_inputs(p: Prepared) -> None:
    """Refuse a spec whose validation inputs repeat a dummy size on some dynamic axis, or miss an input.

    Raises:
        ConfigError: naming the spec, the validation set and the axis.
    """
    dummy = axis_sizes(p.inputs, p.dummy)
    if not p.validation:
        raise ConfigError(f"spec {p.name}.validation", None, "a spec needs at least one validation input set")
    names = [s.name for s in p.inputs]
    for i, feeds in enumerate(p.validation):
        if sorted(feeds) != sorted(names):
            raise ConfigError(
                f"spec {p.name}.validation[{i}]", sorted(feeds), "wrong inputs", ", ".join(names)
            )
        for axis, size in axis_sizes(p.inputs, feeds).items():
            if size == dummy[axis]:
                raise ConfigError(
                    f"spec {p.name}.validation[{i}]",
                    size,
                    f"dynamic axis '{axis}' has the dummy's size; validation must differ in every one",
                )


def seeded(seed: int) -> torch.Generator:
    """A CPU generator, so dummy and validation inputs are the same on every run."""
    return torch.Generator().manual_seed(seed)


def randn(shape: Sequence[int], gen: torch.Generator, scale: float = 1.0) -> torch.Tensor:
    """(shape) float32 standard normal × scale."""
    return torch.randn(*shape, generator=gen) * scale


def rand(shape: Sequence[int], gen: torch.Generator, high: float = 1.0) -> torch.Tensor:
    """(shape) float32 uniform in [0, high)."""
    return torch.rand(*shape, generator=gen) * high
