"""OrtEngine: an ONNX artifact in onnxruntime (CPU, CUDA or TensorRT execution provider).

onnxruntime-gpu does not raise when a GPU provider cannot start: it logs and quietly runs on the CPU
(shared measurements). So after creating the session we compare ``get_providers()`` with what was
asked and raise :class:`ProviderFallbackError` on a silent fallback. A provider the installed
onnxruntime does not list at all is a :class:`MissingDependencyError` with the install command.

The TensorRT provider is the exception: onnxruntime-gpu's is built against TensorRT 10
(``libnvinfer.so.10``) and does not load beside TensorRT 11, so when it is asked for but not active
and the CUDA provider is, the engine runs on CUDA with a warning that says so (``self.fallback``).
Its settings come from the artifact: engine and timing caches under the engines folder, and
min/opt/max profile shapes from the sidecar's spec, so it does not rebuild on every new shape.

On CUDA, torch CUDA tensors are bound in place with IOBinding and outputs are torch tensors on the
device without copies: bound to torch buffers when their shapes follow from the inputs, else wrapped
with ``torch.from_dlpack``. onnxruntime runs on its own torch stream (``user_compute_stream``), which
waits for torch's current stream before each run (the inputs were written there) and is waited on
after it.
"""

from __future__ import annotations

import warnings
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
        {
            "device_id": 0,
            "trt_fp16_enable": False,  # the precision is the ONNX graph's
            "trt_engine_cache_enable": True,
            "trt_timing_cache_enable": True,
        },
    ),
}
TRT_EP_FALLBACK = (
    "the onnxruntime TensorRT provider is not active: onnxruntime-gpu's TensorRT provider is built "
    "against TensorRT 10 (libnvinfer.so.10) and does not load beside TensorRT 11 or without TensorRT; "
    "running on {got} instead. For TensorRT, build a plan: zsplg-fast build {path} (backend trt)"
)
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


def spec_profiles(side: Mapping[str, Any]) -> dict[str, Any]:
    """Input name → (min, opt, max) shapes from the sidecar's profiles ({} when it declares none, or an
    axis has no range)."""
    from zsplg_fast.export.tensorrt import plan_profiles, resolve_ranges

    inputs = [TensorSpec.from_dict(d) for d in side.get("inputs", [])]
    if not inputs or not side.get("profiles"):
        return {}
    try:
        return dict(plan_profiles(inputs, resolve_ranges(side)))
    except ConfigError:
        return {}


def trt_provider_options(side: Mapping[str, Any], cache_dir: str | Path, name: str) -> dict[str, Any]:
    """TensorRT-provider options of an artifact: caches under ``cache_dir/ort_trt/<name>`` and the
    sidecar's min/opt/max profile shapes (``"input:1x3x256x256,..."``), when it declares them."""
    cache = Path(cache_dir) / "ort_trt" / name
    opts: dict[str, Any] = {"trt_engine_cache_path": str(cache), "trt_timing_cache_path": str(cache)}
    shapes = spec_profiles(side)
    if shapes:
        for i, key in enumerate(
            ("trt_profile_min_shapes", "trt_profile_opt_shapes", "trt_profile_max_shapes")
        ):
            opts[key] = ",".join(f"{n}:{'x'.join(str(d) for d in s[i])}" for n, s in shapes.items())
    return opts


def _torch_stream(device_id: int) -> Any:
    """A torch CUDA stream for onnxruntime to run on (non-default: onnxruntime ignores stream 0)."""
    import torch

    if not torch.cuda.is_available():  # the session will fall back and say so
        return None
    return torch.cuda.Stream(device=f"cuda:{device_id}")


def _current_stream(device_id: int) -> Any:
    import torch

    return torch.cuda.current_stream(f"cuda:{device_id}")


def _specs_from_session(items: Sequence[Any]) -> list[TensorSpec]:
    out = []
    for i, it in enumerate(items):
        shape = tuple(d if isinstance(d, int) else (d or f"dim{i}_{j}") for j, d in enumerate(it.shape))
        out.append(TensorSpec(it.name, _ORT_TYPES.get(it.type, it.type), shape))
    return out


def _same_io(declared: Sequence[TensorSpec], real: Sequence[TensorSpec]) -> bool:
    """The same names (in any order), each of the same rank, with equal sizes where both give a number."""
    by_name = {r.name: r.shape for r in real}
    return len(declared) == len(by_name) and all(
        d.name in by_name
        and len(d.shape) == len(by_name[d.name])
        and all(
            not (isinstance(a, int) and isinstance(b, int)) or a == b
            for a, b in zip(d.shape, by_name[d.name], strict=True)
        )
        for d in declared
    )


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
        cache_dir: the engines folder; the TensorRT provider caches its engines in ``ort_trt/<name>``.
    Raises:
        MissingDependencyError: a provider the installed onnxruntime does not offer.
        ProviderFallbackError: the session silently fell back from an asked provider (the TensorRT
            provider falls back to CUDA with a warning instead).
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
        cache_dir: str | Path = "engines",
    ) -> None:
        ort = _ort()
        self.path = Path(path)
        if optimization not in _OPT_LEVELS:
            raise ConfigError("optimization", optimization, "unknown level", valid=", ".join(_OPT_LEVELS))
        asked = [_resolve_provider(p) for p in providers] or [("cpu", "CPUExecutionProvider")]
        if any(a[0] == "tensorrt" for a in asked) and not any(a[0] == "cuda" for a in asked):
            i = next(i for i, a in enumerate(asked) if a[0] == "tensorrt")
            asked.insert(i + 1, ("cuda", PROVIDERS["cuda"][0]))  # nodes TensorRT cannot take, and fallback
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
        side = self._sidecar()
        cap = side.get("onnxruntime_cpu_optimization")  # fp16 ViTs crash ORT CPU at "all" (export/precision)
        if (
            cap in _OPT_LEVELS
            and asked[0][0] == "cpu"
            and _OPT_LEVELS.index(optimization) > _OPT_LEVELS.index(cap)
        ):
            optimization = cap
        self.optimization = optimization
        levels = ort.GraphOptimizationLevel
        opts.graph_optimization_level = {
            "disable": levels.ORT_DISABLE_ALL,
            "basic": levels.ORT_ENABLE_BASIC,
            "extended": levels.ORT_ENABLE_EXTENDED,
            "all": levels.ORT_ENABLE_ALL,
        }[optimization]
        user = provider_options or {}
        gpu = asked[0][0] != "cpu"
        self._stream = _torch_stream(device_id) if gpu else None
        plist = []
        for short, full in asked:
            o = {**PROVIDERS[short][1], **dict(user.get(short, {}))}
            if "device_id" in o:
                o["device_id"] = device_id
            if short == "tensorrt":
                o = {**trt_provider_options(side, cache_dir, self.path.stem), **o}
                Path(o["trt_engine_cache_path"]).mkdir(parents=True, exist_ok=True)
            if short in ("cuda", "tensorrt") and self._stream is not None:
                o.setdefault("user_compute_stream", str(self._stream.cuda_stream))
            plist.append((full, o))
        self.provider_options = dict(plist)
        self.session = ort_session(ort, self.path, opts, plist)  # corrupt file → ModelFileError
        got = list(self.session.get_providers())
        self.fallback: str | None = None
        for short, full in asked:
            if full in got:
                continue
            if short == "tensorrt" and PROVIDERS["cuda"][0] in got:
                self.fallback = TRT_EP_FALLBACK.format(got=", ".join(got), path=self.path)
                warnings.warn(self.fallback, RuntimeWarning, stacklevel=2)
                continue
            raise ProviderFallbackError(
                self.path,
                full,
                got,
                "check the CUDA driver, CUDA/cuDNN libraries (and libnvinfer.so.10 for TensorRT)",
            )
        self.providers = got
        # shapes the TensorRT provider was built for (callers cap their batches there); others: any
        self.profiles = spec_profiles(side) if PROVIDERS["tensorrt"][0] in got else {}
        self.device_id = device_id
        self.device = f"cuda:{device_id}" if gpu else "cpu"
        self.inputs, self.outputs = self._io(side)

    def _sidecar(self) -> dict[str, Any]:
        from zsplg_fast.export.artifact import read_sidecar, sidecar_path

        return read_sidecar(self.path) if sidecar_path(self.path).is_file() else {}

    def _io(self, side: Mapping[str, Any]) -> tuple[list[TensorSpec], list[TensorSpec]]:
        """The sidecar's inputs/outputs (symbolic axis names), checked against the graph's; the graph's
        when the sidecar has none."""
        try:
            real = (
                _specs_from_session(self.session.get_inputs()),
                _specs_from_session(self.session.get_outputs()),
            )
        except UnicodeDecodeError as e:  # a damaged file whose tensor names are not UTF-8
            from zsplg_fast.export.model_files import invalid_onnx

            raise invalid_onnx(self.path, e) from e
        if not (side.get("inputs") and side.get("outputs")):
            return real
        declared = (
            [TensorSpec.from_dict(d) for d in side["inputs"]],
            [TensorSpec.from_dict(d) for d in side["outputs"]],
        )
        for kind, got, want in zip(("inputs", "outputs"), declared, real, strict=True):
            if not _same_io(got, want):
                from zsplg_fast.errors import SidecarError
                from zsplg_fast.export.artifact import sidecar_path

                shown = ", ".join(f"{t.name} {list(t.shape)}" for t in want)
                raise SidecarError(
                    sidecar_path(self.path),
                    f"sidecar {kind} do not match the model's ({shown}); export it again",
                )
        return declared

    def __call__(self, feeds: Mapping[str, Any]) -> dict[str, Any]:
        feeds = check_feeds(self.inputs, feeds)
        if any(getattr(getattr(v, "device", None), "type", "cpu") == "cuda" for v in feeds.values()):
            return self._run_bound(feeds)
        arrays = {k: (v if isinstance(v, np.ndarray) else v.detach().cpu().numpy()) for k, v in feeds.items()}
        names = [o.name for o in self.outputs]
        return dict(zip(names, self.session.run(names, arrays), strict=True))

    def _run_bound(self, feeds: Mapping[str, Any], device: str = "cuda") -> dict[str, Any]:
        """IOBinding: torch tensors bound in place; outputs are torch tensors on ``device`` (``cuda`` or,
        for tests, ``cpu``) without copies: bound to torch buffers when their shape follows from the
        inputs' symbolic axes, else the provider's buffers wrapped with ``torch.from_dlpack``."""
        import torch

        index = self.device_id if device == "cuda" else 0
        binding = self.session.io_binding()
        keep, axes = [], {}
        for spec in self.inputs:
            x = feeds[spec.name]
            for i, d in enumerate(spec.shape):
                if isinstance(d, str):
                    axes[d] = int(x.shape[i])
            if isinstance(x, torch.Tensor) and x.device.type == device:
                x = x.contiguous()
                keep.append(x)
                binding.bind_input(
                    spec.name, device, index, np.dtype(spec.dtype), tuple(x.shape), x.data_ptr()
                )
            else:
                binding.bind_cpu_input(spec.name, np.ascontiguousarray(np.asarray(x)))
        out: dict[str, Any] = {}
        for spec in self.outputs:
            shape = [d if isinstance(d, int) else axes.get(d) for d in spec.shape]
            if all(d is not None for d in shape):
                buf = torch.empty(shape, dtype=getattr(torch, spec.dtype), device=f"{device}:{index}")
                binding.bind_output(
                    spec.name, device, index, np.dtype(spec.dtype), tuple(shape), buf.data_ptr()
                )
                out[spec.name] = buf
            else:
                binding.bind_output(spec.name, device, index)
        if self._stream is not None:  # inputs were written on torch's current stream
            self._stream.wait_stream(_current_stream(self.device_id))
        self.session.run_with_iobinding(binding)
        if self._stream is not None:
            _current_stream(self.device_id).wait_stream(self._stream)
        values = binding.get_outputs()
        for spec, value in zip(self.outputs, values, strict=True):
            if spec.name not in out:
                out[spec.name] = torch.from_dlpack(value)  # OrtValue implements __dlpack__: no copy
        return out


def _available() -> str | None:
    try:
        _ort()
    except MissingDependencyError as e:
        return str(e)
    return None


register_backend("ort", OrtEngine, suffixes=(".onnx",), available=_available, aliases=("onnxruntime",))
