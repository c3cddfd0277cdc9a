"""TorchEngine: a spec's PyTorch module behind the Engine API (eager, optional torch.compile, autocast).

Two ways in: wrap a bound spec's module directly (``TorchEngine(p.module, p.inputs, p.outputs)``), or
``load_engine("export/<name>.onnx", backend="torch")``, which rebuilds the module from the sidecar's
``source`` record and ``spec_options`` (the weights' sha256 must still match).
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from zsplg_fast.engines.base import check_feeds, register_backend
from zsplg_fast.errors import ConfigError
from zsplg_fast.export.tensors import TensorSpec

AUTOCAST_DTYPES: dict[str, torch.dtype | None] = {
    "fp32": None,
    "fp16": torch.float16,
    "bf16": torch.bfloat16,
}


class TorchEngine:
    """Run ``module(**feeds)`` with feed checks; outputs as numpy on CPU, torch tensors on CUDA.

    Args:
        module: forward argument names == input names; returns one tensor or a tuple in output order.
        inputs / outputs: tensor declarations (from the spec or the sidecar).
        device: ``"cpu"`` or ``"cuda[:i]"``.
        autocast: ``"fp32"`` (none), ``"fp16"`` or ``"bf16"``; float outputs are cast back to float32.
        compile: wrap the module with ``torch.compile`` (first calls are slow).
    """

    backend = "torch"

    def __init__(
        self,
        module: nn.Module,
        inputs: Sequence[TensorSpec],
        outputs: Sequence[TensorSpec],
        device: str = "cpu",
        autocast: str = "fp32",
        compile: bool = False,
        name: str = "",
    ) -> None:
        if autocast not in AUTOCAST_DTYPES:
            raise ConfigError("autocast", autocast, "unknown precision", valid=", ".join(AUTOCAST_DTYPES))
        self.inputs = list(inputs)
        self.outputs = list(outputs)
        self.device = str(torch.device(device))
        self.name = name
        self.autocast = autocast
        self.module = module.eval().to(self.device)
        self._run: Any = torch.compile(self.module) if compile else self.module

    def _autocast(self) -> contextlib.AbstractContextManager:
        dt = AUTOCAST_DTYPES[self.autocast]
        if dt is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=torch.device(self.device).type, dtype=dt)

    def __call__(self, feeds: Mapping[str, Any]) -> dict[str, Any]:
        feeds = check_feeds(self.inputs, feeds)
        args = {
            k: (torch.from_numpy(np.ascontiguousarray(v)) if isinstance(v, np.ndarray) else v).to(self.device)
            for k, v in feeds.items()
        }
        with torch.inference_mode(), self._autocast():
            out = self._run(**args)
        outs = out if isinstance(out, (tuple, list)) else (out,)
        result: dict[str, Any] = {}
        for spec, t in zip(self.outputs, outs, strict=True):
            if spec.dtype == "float32" and t.dtype != torch.float32:
                t = t.float()
            result[spec.name] = t if self.device != "cpu" else t.numpy()
        return result


def load_torch_engine(path: str | Path, **options: Any) -> TorchEngine:
    """Rebuild the PyTorch module of an exported artifact from its sidecar (same spec, same weights)."""
    from zsplg_fast.export.artifact import read_sidecar
    from zsplg_fast.export.sources import rebuild
    from zsplg_fast.export.specs import get_spec

    side = read_sidecar(path)
    spec = get_spec(str(side.get("spec")))
    src = rebuild(side.get("source", {}), where=str(path))
    spec_options = {k: v for k, v in side.get("spec_options", {}).items() if k != "validation_batches"}
    p = spec.bind(src.model, **spec_options)
    return TorchEngine(p.module, p.inputs, p.outputs, name=spec.name, **options)


register_backend("torch", load_torch_engine, suffixes=(".onnx",), aliases=("pytorch",), priority=10)
