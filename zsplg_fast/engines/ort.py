"""OrtEngine: an ONNX artifact in onnxruntime (CPU, CUDA or TensorRT execution provider).

onnxruntime-gpu does not raise when a GPU provider cannot start: it logs and quietly runs on the CPU
(shared measurements). So after creating the session we compare ``get_providers()`` with what was
asked and raise :class:`ProviderFallbackError` on a silent fallback. A provider the installed
onnxruntime does not list at all is a :class:`MissingDependencyError` with the install command.
On CUDA, torch CUDA tensors are bound in place with IOBinding (no host round trip).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from zsplg_fast.engines.base import check_feeds, register_backend
from zsplg_fast.errors import ConfigError, MissingDependencyError, ProviderFallbackError
from zsplg_fast.export.model_files import ort_session
from zsplg_fast.export.tensors import TensorSpec

# short name → (onnxruntime provider, default options); follows the onnxruntime EP docs' option names
PROVIDERS: dict[str, tuple[str, dict[str, Any]]] = {
    "cpu": ("CPUExecutionProvider", {}),
    "cuda": ("CUDAExecutionProvider", {"device_id": 0, "cudnn_conv_algo_search": "HEURISTIC"}),
    "tensorrt": (
        "TensorrtExecutionProvider",
        {"device_id": 0, "trt_fp16_enable": False, "trt_engine_cache_enable": True},
    ),
}
GPU_INSTALL = (
    "pip uninstall -y onnxruntime && pip install onnxruntime-gpu (never both in one environment; "
    "needs CUDA 12/13 + cuDNN 9, and TensorRT 10 for the TensorRT provider)"
)
_ORT_TYPES = {
    "tensor(float)": "float32",
    "tensor(float16)": "float16",
    "tensor(double)": "float64",
    "tensor(int64)": "int64",
    "tensor(int32)": "int32",
    "tensor(uint8)": "uint8",
    "tensor(int8)": "int8",
    "tensor(bool)": "bool",
}
_OPT_LEVELS = ("disable", "basic", "extended", "all")


def _ort() -> Any:
    try:
        import onnxruntime as ort
    except ImportError as e:
        raise MissingDependencyError("onnxruntime", "ONNX engines", "pip install onnxruntime") from e
    return ort


def _resolve_provider(name: str) -> tuple[str, str]:
    """Short or full provider name → (short, onnxruntime name)."""
    for short, (full, _) in PROVIDERS.items():
        if name in (short, full):
            return short, full
    raise ConfigError("providers", name, "unknown execution provider", valid=", ".join(PROVIDERS))


def _specs_from_session(items: Sequence[Any]) -> list[TensorSpec]:
    out = []
    for i, it in enumerate(items):
        shape = tuple(d if isinstance(d, int) else (d or f"dim{i}_{j}") for j, d in enumerate(it.shape))
        out.append(TensorSpec(it.name, _ORT_TYPES.get(it.type, it.type), shape))
    return out


class OrtEngine:
    """An onnxruntime session behind the Engine API.

    Args:
        path: ``export/<name>.onnx`` (its sidecar, when present, gives the declared inputs/outputs).
        providers: short names (``"cpu"``, ``"cuda"``, ``"tensorrt"``) or onnxruntime names, in
            preference order; CPU is always the last resort of onnxruntime itself.
        provider_options: short name → options merged over :data:`PROVIDERS` defaults.
        intra_op_threads / inter_op_threads: onnxruntime thread pools (None = its default).
        optimization: graph optimisation level, one of disable / basic / extended / all.
        device_id: CUDA device for the GPU providers and IOBinding.
        session_options: other ``onnxruntime.SessionOptions`` attributes, e.g.
            ``{"enable_cpu_mem_arena": False}`` (allocate through malloc, sharing freed memory with torch).
    Raises:
        MissingDependencyError: a provider the installed onnxruntime does not offer.
        ProviderFallbackError: the session silently fell back from an asked provider.
    """

    backend = "ort"

    def __init__(
        self,
        path: str | Path,
        providers: Sequence[str] = ("cpu",),
        provider_options: Mapping[str, Mapping[str, Any]] | None = None,
        intra_op_threads: int | None = None,
        inter_op_threads: int | None = None,
        optimization: str = "all",
        device_id: int = 0,
        session_options: Mapping[str, Any] | None = None,
    ) -> None:
        ort = _ort()
        self.path = Path(path)
        if optimization not in _OPT_LEVELS:
            raise ConfigError("optimization", optimization, "unknown level", valid=", ".join(_OPT_LEVELS))
        asked = [_resolve_provider(p) for p in providers] or [("cpu", "CPUExecutionProvider")]
        available = ort.get_available_providers()
        for short, full in asked:
            if full not in available:
                raise MissingDependencyError(
                    "onnxruntime-gpu", f"the onnxruntime {short} provider ({full})", GPU_INSTALL
                )
        opts = ort.SessionOptions()
        if intra_op_threads:
            opts.intra_op_num_threads = int(intra_op_threads)
        if inter_op_threads:
            opts.inter_op_num_threads = int(inter_op_threads)
        for key, value in (session_options or {}).items():
            if not hasattr(opts, key):
                raise ConfigError("session_options", key, "not an onnxruntime.SessionOptions attribute")
            setattr(opts, key, value)
        levels = ort.GraphOptimizationLevel
        opts.graph_optimization_level = {
            "disable": levels.ORT_DISABLE_ALL,
            "basic": levels.ORT_ENABLE_BASIC,
            "extended": levels.ORT_ENABLE_EXTENDED,
            "all": levels.ORT_ENABLE_ALL,
        }[optimization]
        user = provider_options or {}
        plist = []
        for short, full in asked:
            o = {**PROVIDERS[short][1], **dict(user.get(short, {}))}
            if "device_id" in o:
                o["device_id"] = device_id
            plist.append((full, o))
        self.session = ort_session(ort, self.path, opts, plist)  # corrupt file → ModelFileError
        got = list(self.session.get_providers())
        for _short, full in asked:
            if full not in got:
                raise ProviderFallbackError(
                    self.path,
                    full,
                    got,
                    "check the CUDA driver, CUDA/cuDNN libraries (and libnvinfer.so.10 for TensorRT)",
                )
        self.providers = got
        self.device_id = device_id
        self.device = "cpu" if asked[0][0] == "cpu" else f"cuda:{device_id}"
        self.inputs, self.outputs = self._io()

    def _io(self) -> tuple[list[TensorSpec], list[TensorSpec]]:
        from zsplg_fast.export.artifact import sidecar_path

        if sidecar_path(self.path).is_file():
            from zsplg_fast.export.artifact import read_sidecar

            side = read_sidecar(self.path)
            return (
                [TensorSpec.from_dict(d) for d in side["inputs"]],
                [TensorSpec.from_dict(d) for d in side["outputs"]],
            )
        return _specs_from_session(self.session.get_inputs()), _specs_from_session(self.session.get_outputs())

    def __call__(self, feeds: Mapping[str, Any]) -> dict[str, Any]:
        feeds = check_feeds(self.inputs, feeds)
        if any(getattr(getattr(v, "device", None), "type", "cpu") == "cuda" for v in feeds.values()):
            return self._run_bound(feeds)
        arrays = {k: (v if isinstance(v, np.ndarray) else v.detach().cpu().numpy()) for k, v in feeds.items()}
        names = [o.name for o in self.outputs]
        return dict(zip(names, self.session.run(names, arrays), strict=True))

    def _run_bound(self, feeds: Mapping[str, Any]) -> dict[str, Any]:
        """IOBinding: CUDA torch tensors are bound in place, outputs stay on the device (torch tensors)."""
        import torch

        binding = self.session.io_binding()
        keep = []
        for spec in self.inputs:
            x = feeds[spec.name]
            if isinstance(x, torch.Tensor) and x.is_cuda:
                x = x.contiguous()
                keep.append(x)
                binding.bind_input(
                    spec.name, "cuda", x.device.index or 0, np.dtype(spec.dtype), tuple(x.shape), x.data_ptr()
                )
            else:
                binding.bind_cpu_input(spec.name, np.ascontiguousarray(np.asarray(x)))
        for spec in self.outputs:
            binding.bind_output(spec.name, "cuda", self.device_id)
        self.session.run_with_iobinding(binding)
        out = {}
        for spec, value in zip(self.outputs, binding.get_outputs(), strict=True):
            if hasattr(value, "to_dlpack"):
                out[spec.name] = torch.from_dlpack(value.to_dlpack())
            else:
                out[spec.name] = torch.from_numpy(value.numpy()).to(f"cuda:{self.device_id}")
        return out


def _available() -> str | None:
    try:
        _ort()
    except MissingDependencyError as e:
        return str(e)
    return None


register_backend("ort", OrtEngine, suffixes=(".onnx",), available=_available, aliases=("onnxruntime",))
