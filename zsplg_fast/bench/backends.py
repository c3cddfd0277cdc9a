"""The benchmark's columns: each backend names an engine kind, options, and whether it can run here.

Availability comes from the engines registry (:func:`zsplg_fast.engines.backends`, e.g. TensorRT's
"needs the 'tensorrt' package" reason) plus what the column itself needs: a CUDA device, an
onnxruntime execution provider, a C++ compiler for ``torch.compile``. An unavailable backend becomes
a table cell with its reason, never an error. Engines are built per kind through
:data:`ENGINE_BUILDERS` (no if/elif over backends).
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from zsplg_fast.errors import ConfigError


class CaseSource(Protocol):
    """What an engine builder may ask of a benchmark case (see ``zsplg_fast.bench.matrix``)."""

    def prepared(self) -> Any: ...  # a bound spec (zsplg_fast.export.specs.Prepared)

    def onnx(self) -> Any: ...  # Path of the exported fp32 ONNX (exported once, cached)

    def qdq_onnx(self) -> Any: ...  # Path of a static QDQ INT8 ONNX calibrated on the case's feeds

    def shapes(self) -> dict[str, int]: ...  # symbolic axis → size in this case's feeds


@dataclass(frozen=True)
class BenchBackend:
    """One column. ``kind`` picks the builder in :data:`ENGINE_BUILDERS`; ``engine`` is the engines
    registry name whose availability applies; ``options`` go to the builder."""

    name: str
    summary: str
    kind: str
    engine: str
    cuda: bool = False
    options: Mapping[str, Any] = field(default_factory=dict)
    extra_check: Callable[[], str | None] | None = None

    def unavailable(self) -> str | None:
        """None when this backend can run here, else the reason (one line)."""
        from zsplg_fast.engines import backends

        info = backends().get(self.engine)
        if info is None:
            return f"engine backend '{self.engine}' is not registered"
        reasons = [info.available()]
        if self.cuda and not _cuda():
            reasons.append("needs an NVIDIA GPU: torch.cuda.is_available() is False on this machine")
        if self.extra_check is not None and not reasons[0]:
            reasons.append(self.extra_check())
        return "; ".join(r for r in reasons if r) or None


def _cuda() -> bool:
    import torch

    return bool(torch.cuda.is_available())


def _compiler() -> str | None:
    import torch

    if not hasattr(torch, "compile"):
        return f"torch {torch.__version__} has no torch.compile"
    if not (shutil.which("c++") or shutil.which("g++") or shutil.which("clang++")):
        return "torch.compile (inductor) needs a C++ compiler on PATH (apt install g++)"
    return None


def _provider(full: str) -> Callable[[], str | None]:
    def check() -> str | None:
        import onnxruntime as ort

        from zsplg_fast.engines.ort import GPU_INSTALL

        have = ort.get_available_providers()
        if full not in have:
            return f"onnxruntime {ort.__version__} offers {', '.join(have)}, not {full}; {GPU_INSTALL}"
        return None

    return check


def _both(*checks: Callable[[], str | None]) -> Callable[[], str | None]:
    def check() -> str | None:
        return next((r for r in (c() for c in checks) if r), None)

    return check


BACKENDS: dict[str, BenchBackend] = {
    b.name: b
    for b in (
        BenchBackend("torch", "PyTorch eager, fp32", "module", "torch"),
        BenchBackend(
            "torch_compile",
            "torch.compile (inductor), fp32",
            "module",
            "torch",
            options={"compile": True},
            extra_check=_compiler,
        ),
        BenchBackend(
            "torch_fp16", "PyTorch eager, fp16 autocast", "module", "torch", True, {"autocast": "fp16"}
        ),
        BenchBackend(
            "torch_bf16", "PyTorch eager, bf16 autocast", "module", "torch", True, {"autocast": "bf16"}
        ),
        BenchBackend("ort_cpu", "onnxruntime CPU EP, fp32", "onnx", "ort", options={"providers": ("cpu",)}),
        BenchBackend(
            "ort_cuda",
            "onnxruntime CUDA EP, fp32",
            "onnx",
            "ort",
            True,
            {"providers": ("cuda",)},
            _provider("CUDAExecutionProvider"),
        ),
        BenchBackend(
            "ort_trt",
            "onnxruntime TensorRT EP, fp16",
            "onnx",
            "ort",
            True,
            {
                "providers": ("tensorrt", "cuda"),
                "provider_options": {"tensorrt": {"trt_fp16_enable": True}},
            },
            _both(_provider("TensorrtExecutionProvider"), _provider("CUDAExecutionProvider")),
        ),
        BenchBackend("trt_fp32", "TensorRT 10 plan, fp32", "plan", "trt", True, {"precision": "fp32"}),
        BenchBackend("trt_fp16", "TensorRT 10 plan, fp16", "plan", "trt", True, {"precision": "fp16"}),
        BenchBackend(
            "trt_int8",
            "TensorRT 10 plan, int8 from a static QDQ model",
            "plan",
            "trt",
            True,
            {"precision": "int8"},
        ),
        BenchBackend(
            "ort_int8",
            "onnxruntime CPU EP on a static QDQ int8 model (Conv/MatMul/Gemm, per-channel)",
            "onnx_int8",
            "ort",
            options={"providers": ("cpu",)},
        ),
    )
}


def get_backend(name: str) -> BenchBackend:
    if name not in BACKENDS:
        raise ConfigError("bench.backends", name, "unknown benchmark backend", valid=", ".join(BACKENDS))
    return BACKENDS[name]


def availability(names: list[str]) -> dict[str, str | None]:
    """backend name → None (available) or the reason it is not."""
    return {n: get_backend(n).unavailable() for n in names}


def torch_device(spec: str, backend: BenchBackend) -> str:
    """The torch device a module backend runs on: CUDA-only columns use ``cuda``; else ``spec`` (auto →
    cuda when available, else cpu)."""
    if backend.cuda:
        return "cuda" if spec in ("auto", "cpu") else spec
    if spec == "auto":
        return "cuda" if _cuda() else "cpu"
    return spec


# --- engine builders, one per kind --------------------------------------------------------------------


def _module_engine(b: BenchBackend, case: CaseSource, device: str, threads: int | None) -> Any:
    from zsplg_fast.engines.torch_engine import TorchEngine

    p = case.prepared()
    return TorchEngine(
        p.module,
        p.inputs,
        p.outputs,
        device=torch_device(device, b),
        autocast=str(b.options.get("autocast", "fp32")),
        compile=bool(b.options.get("compile", False)),
        name=p.name,
    )


def _ort(path: Any, b: BenchBackend, threads: int | None) -> Any:
    from zsplg_fast.engines.ort import OrtEngine

    return OrtEngine(
        path,
        providers=tuple(b.options.get("providers", ("cpu",))),
        provider_options=b.options.get("provider_options"),
        intra_op_threads=threads,
    )


def _onnx_engine(b: BenchBackend, case: CaseSource, device: str, threads: int | None) -> Any:
    return _ort(case.onnx(), b, threads)


def _onnx_int8_engine(b: BenchBackend, case: CaseSource, device: str, threads: int | None) -> Any:
    return _ort(case.qdq_onnx(), b, threads)


def _plan_engine(b: BenchBackend, case: CaseSource, device: str, threads: int | None) -> Any:
    """Build (or reuse) a TensorRT plan whose profile's opt shape is this case's, then open it."""
    from pathlib import Path

    from zsplg_fast.engines import load_engine
    from zsplg_fast.export.artifact import read_sidecar
    from zsplg_fast.export.tensorrt import build_engine, precision_onnx
    from zsplg_fast.export.tensors import AxisRange

    precision = str(b.options["precision"])  # strongly typed: the plan's precision is the ONNX's
    onnx = Path(case.qdq_onnx() if precision == "int8" else precision_onnx(case.onnx(), precision))
    defaults = read_sidecar(onnx).get("profiles", {})
    ranges = {}
    for axis, size in case.shapes().items():
        lo, _, hi = defaults.get(axis, [size, size, size])
        ranges[axis] = AxisRange(min(lo, size), size, max(hi, size))
    out = onnx.parent / "engines" / "_".join(f"{k}{v}" for k, v in sorted(case.shapes().items()))
    artifact, _ = build_engine(
        onnx, out, precision=precision, profiles=ranges, timing_cache=out / "timing.cache"
    )
    return load_engine(artifact.path, backend="trt")


EngineBuilder = Callable[[BenchBackend, CaseSource, str, "int | None"], Any]
ENGINE_BUILDERS: dict[str, EngineBuilder] = {
    "module": _module_engine,
    "onnx": _onnx_engine,
    "onnx_int8": _onnx_int8_engine,
    "plan": _plan_engine,
}


def build_engine_for(name: str, case: CaseSource, device: str = "auto", threads: int | None = None) -> Any:
    """An Engine for case ``case`` on benchmark backend ``name`` (exports / quantizes / builds lazily)."""
    b = get_backend(name)
    return ENGINE_BUILDERS[b.kind](b, case, device, threads)
