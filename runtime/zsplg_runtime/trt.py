"""TensorRT plans without torch: sidecar checks, optimisation profiles, and :class:`TrtSession` (numpy in
and out, device buffers through cuda-python).

Follows the TensorRT Python API (``IRuntime.deserialize_cuda_engine``, ``ICudaEngine.num_io_tensors`` /
``get_tensor_name`` / ``get_tensor_mode`` / ``get_tensor_dtype``, ``IExecutionContext.set_input_shape`` /
``set_tensor_address`` / ``execute_async_v3``) and the CUDA runtime API as cuda-python exposes it
(``cudaMalloc``, ``cudaMemcpyAsync``, ``cudaStreamSynchronize``; each returns ``(err, ...)``).
Before deserialising, the plan's sidecar is compared with the running TensorRT and GPU
(:func:`check_compatible`, pure Python): a plan is tied to the TensorRT version (unless built
version-compatible) and to the GPU's compute capability. A plan built by ``trtexec`` on the target
from a deploy folder has the sidecar the deploy folder carries (``model.<precision>.json``), which
records no build: TensorRT's own deserialisation is then the check.

Both are optional (``pip install 'zsplg-fast-runtime[trt]'``) and imported lazily.
``zsplg_fast.engines.trt.TrtEngine`` builds on these checks with torch CUDA tensors as buffers.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from zsplg_runtime.errors import ConfigError, EngineIncompatibleError, FeedError, MissingDependencyError
from zsplg_runtime.feeds import check_feeds
from zsplg_runtime.sidecar import open_artifact
from zsplg_runtime.tensors import TensorSpec

ALIGNMENT = 256  # bytes; TensorRT's I/O address alignment (cudaMalloc gives 256-byte aligned memory)
Profile = tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]
TRT_INSTALL = (
    "on a machine with an NVIDIA GPU and CUDA 12/13: pip install 'tensorrt>=10,<12' (the 'gpu' extra of "
    "zsplg-fast, or the 'trt' extra of zsplg-fast-runtime; the wheel comes from NVIDIA's index), "
    "or use --backend ort / torch"
)
CUDA_INSTALL = "pip install 'zsplg-fast-runtime[trt]' (cuda-python), on a machine with an NVIDIA GPU"


def require_tensorrt(feature: str = "TensorRT engines") -> ModuleType:
    """Import ``tensorrt`` or raise MissingDependencyError naming ``feature`` and the install command."""
    try:
        import tensorrt as trt
    except ImportError as e:  # also the bindings-only wheel whose libnvonnxparser is missing
        raise MissingDependencyError("tensorrt", feature, TRT_INSTALL) from e
    return trt


def tensorrt_missing_reason() -> str | None:
    """None when ``import tensorrt`` works, else the message a user would get."""
    try:
        require_tensorrt()
    except MissingDependencyError as e:
        return str(e)
    return None


def require_cudart(feature: str = "TensorRT plans without torch") -> Any:
    """cuda-python's CUDA runtime module (``cuda.bindings.runtime``; ``cuda.cudart`` before 12.6)."""
    try:
        from cuda.bindings import runtime as cudart  # type: ignore[import-not-found]
    except ImportError:
        try:
            from cuda import cudart  # type: ignore[import-not-found,no-redef]
        except ImportError as e:
            raise MissingDependencyError("cuda-python", feature, CUDA_INSTALL) from e
    return cudart


@dataclass(frozen=True)
class RuntimeInfo:
    """What a plan is tied to: TensorRT version, GPU name, compute capability (``"9.0"``)."""

    tensorrt: str
    gpu: str
    compute_capability: str

    def describe(self) -> str:
        return f"TensorRT {self.tensorrt} on {self.gpu} (compute capability {self.compute_capability})"


def _ok(cudart: Any, result: Any, what: str) -> Any:
    """Unpack cuda-python's ``(err, *values)``; an error code is a MissingDependencyError naming the call."""
    err, *values = result if isinstance(result, tuple) else (result,)
    if int(err) != 0:
        name = getattr(err, "name", str(err))
        raise MissingDependencyError(
            "a CUDA GPU",
            f"TensorRT plans ({what}: {name})",
            "run on a machine with an NVIDIA GPU and its driver",
        )
    return values[0] if len(values) == 1 else tuple(values)


def runtime_info(device: int = 0) -> RuntimeInfo:
    """The running TensorRT and GPU, read through cuda-python (no torch)."""
    trt = require_tensorrt()
    cudart = require_cudart()
    prop = _ok(cudart, cudart.cudaGetDeviceProperties(device), "cudaGetDeviceProperties")
    name = prop.name.decode().rstrip("\x00") if isinstance(prop.name, bytes) else str(prop.name)
    return RuntimeInfo(str(trt.__version__), name, f"{prop.major}.{prop.minor}")


def _version(v: str) -> tuple[int, ...]:
    return tuple(int(x) for x in v.split(".")[:3] if x.isdigit())


def rebuild_command(side: Mapping[str, Any], path: str | Path) -> str:
    """The command that rebuilds this plan here (recorded at build time, else reconstructed)."""
    if side.get("rebuild_command"):
        return str(side["rebuild_command"])
    onnx = side.get("onnx", {}).get("path", "export/<name>.onnx")
    precision = side.get("precision", "fp16")
    return f"zsplg-fast build {onnx} --precision {precision} --out {Path(path).parent} --force"


def check_compatible(
    side: Mapping[str, Any], running: RuntimeInfo, path: str | Path, strict_gpu: bool = True
) -> None:
    """Raise EngineIncompatibleError unless a plan built as ``side`` describes can run on ``running``.

    Rules: same TensorRT version (version-compatible plans: same major, running ≥ built); same compute
    capability; same GPU name unless ``strict_gpu`` is False (tactics are tuned per GPU model).
    A sidecar that records no build (``built_on_target``: the deploy folder's sidecar for a plan that
    ``trtexec`` builds on the device) is not compared: TensorRT refuses a foreign plan itself.
    """
    if side.get("built_on_target") and "tensorrt" not in side:
        return
    built = RuntimeInfo(
        str(side.get("tensorrt", "?")), str(side.get("gpu", "?")), str(side.get("compute_capability", "?"))
    )
    if side.get("version_compatible"):
        bv, rv = _version(built.tensorrt), _version(running.tensorrt)
        trt_ok = bool(bv) and bool(rv) and bv[0] == rv[0] and rv >= bv
    else:
        trt_ok = built.tensorrt == running.tensorrt
    ok = trt_ok and built.compute_capability == running.compute_capability
    if strict_gpu:
        ok = ok and built.gpu == running.gpu
    if not ok:
        raise EngineIncompatibleError(path, built.describe(), running.describe(), rebuild_command(side, path))


def profile_of(engine: Any, side: Mapping[str, Any], name: str) -> Profile | None:
    """(min, opt, max) shapes of input ``name`` in profile 0: from the engine, else the plan sidecar."""
    try:
        got = engine.get_tensor_profile_shape(name, 0)
        if got is not None and len(got) == 3:
            return tuple(tuple(int(d) for d in s) for s in got)  # type: ignore[return-value]
    except (AttributeError, RuntimeError, TypeError):
        pass
    shapes = side.get("profiles", {}).get(name)
    if shapes and all(isinstance(s, list) for s in shapes):
        return tuple(tuple(int(d) for d in s) for s in shapes)  # type: ignore[return-value]
    return None


def check_profile(name: str, shape: tuple[int, ...], profile: Profile | None) -> None:
    """Raise FeedError unless ``min <= shape <= max`` on every axis of the optimisation profile."""
    if profile is None:
        return
    lo, mid, hi = profile
    inside = len(shape) == len(lo) and all(a <= d <= b for d, a, b in zip(shape, lo, hi, strict=True))
    if not inside:
        raise FeedError(
            name,
            f"a shape within the plan's profile (min {list(lo)}, opt {list(mid)}, max {list(hi)}); "
            "rebuild with a wider --profile",
            f"shape {list(shape)}",
        )


def set_shape(context: Any, name: str, shape: tuple[int, ...], profile: Profile | None) -> None:
    """``context.set_input_shape`` after the profile check; False from TensorRT is a FeedError."""
    check_profile(name, shape, profile)
    if not context.set_input_shape(name, shape):
        lo, mid, hi = profile or ((), (), ())
        raise FeedError(
            name,
            f"a shape TensorRT accepts (profile min {list(lo)}, opt {list(mid)}, max {list(hi)})",
            f"shape {list(shape)} (set_input_shape returned False)",
        )


def deserialize(trt: Any, path: Path, side: Mapping[str, Any], running: str) -> tuple[Any, Any, Any]:
    """(runtime, engine, logger) of the plan at ``path``; an unreadable plan is EngineIncompatibleError."""
    logger = trt.Logger(trt.Logger.WARNING)
    trt_runtime = trt.Runtime(logger)
    if side.get("version_compatible"):
        trt_runtime.engine_host_code_allowed = True
    engine = trt_runtime.deserialize_cuda_engine(path.read_bytes())
    if engine is None:
        raise EngineIncompatibleError(
            path, "an unreadable or foreign plan", running, rebuild_command(side, path)
        )
    return trt_runtime, engine, logger


def check_io(engine: Any, trt: Any, side: Mapping[str, Any], path: Path) -> list[str]:
    """The engine's I/O tensor names, checked against the sidecar's declared inputs and outputs."""
    names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
    is_input = {n: engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT for n in names}
    ins = {d["name"] for d in side["inputs"]}
    declared = ins | {d["name"] for d in side["outputs"]}
    if set(names) != declared or ins != {n for n in names if is_input[n]}:
        raise EngineIncompatibleError(
            path, f"tensors {sorted(names)}", f"a sidecar declaring {sorted(declared)}", "rebuild it"
        )
    return names


class TrtSession:
    """Run a ``.plan`` with numpy feeds and numpy outputs; no torch.

    Args:
        path: ``<name>.<precision>.plan`` with its ``<name>.<precision>.json`` sidecar (written by
            ``zsplg-fast build``, or the deploy folder's, for a plan ``trtexec`` builds on the target).
        device: CUDA device index.
        strict_gpu: refuse a plan built on another GPU model of the same compute capability.
    Raises:
        MissingDependencyError: no tensorrt, or no cuda-python.
        EngineIncompatibleError: TensorRT version / GPU mismatch, or a plan TensorRT cannot deserialise.
    """

    backend = "trt"

    def __init__(self, path: str | Path, device: int = 0, strict_gpu: bool = True) -> None:
        self.path = Path(path)
        side = open_artifact(self.path)
        for key in ("inputs", "outputs"):
            if not side.get(key):
                raise EngineIncompatibleError(
                    self.path,
                    f"a sidecar without '{key}'",
                    "a plan loader",
                    "copy the deploy folder's sidecar",
                )
        trt = require_tensorrt("running TensorRT plans")
        self._cudart = cudart = require_cudart()
        _ok(cudart, cudart.cudaSetDevice(device), "cudaSetDevice")
        running = runtime_info(device)
        check_compatible(side, running, self.path, strict_gpu)
        self._runtime, self.engine, self._logger = deserialize(trt, self.path, side, running.describe())
        self.context = self.engine.create_execution_context()
        if self.context is None:
            raise EngineIncompatibleError(
                self.path, "a plan", "not enough GPU memory for an execution context", "free GPU memory"
            )
        self.device = f"cuda:{device}"
        self.sidecar = side
        self.inputs = [TensorSpec.from_dict(d) for d in side["inputs"]]
        self.outputs = [TensorSpec.from_dict(d) for d in side["outputs"]]
        names = check_io(self.engine, trt, side, self.path)
        numpy_of = {
            trt.float32: np.dtype("float32"),
            trt.float16: np.dtype("float16"),
            trt.int32: np.dtype("int32"),
            trt.int64: np.dtype("int64"),
            trt.int8: np.dtype("int8"),
            trt.uint8: np.dtype("uint8"),
            trt.bool: np.dtype("bool"),
        }
        self._dtypes = {n: numpy_of[self.engine.get_tensor_dtype(n)] for n in names}
        self.profiles = {s.name: profile_of(self.engine, side, s.name) for s in self.inputs}
        self._stream = _ok(cudart, cudart.cudaStreamCreate(), "cudaStreamCreate")
        self._buffers: dict[str, tuple[int, int]] = {}  # name → (device pointer, bytes)

    def close(self) -> None:
        """Free the device buffers and the stream (also on garbage collection)."""
        cudart = getattr(self, "_cudart", None)
        for ptr, _ in getattr(self, "_buffers", {}).values():
            cudart.cudaFree(ptr)
        self._buffers = {}
        if getattr(self, "_stream", None) is not None:
            cudart.cudaStreamDestroy(self._stream)
            self._stream = None

    def __del__(self) -> None:
        with contextlib.suppress(Exception):  # interpreter shutdown: cuda-python may be gone already
            self.close()

    def _buffer(self, name: str, nbytes: int) -> int:
        ptr, size = self._buffers.get(name, (0, 0))
        if size < nbytes:
            if ptr:
                _ok(self._cudart, self._cudart.cudaFree(ptr), "cudaFree")
            ptr = int(_ok(self._cudart, self._cudart.cudaMalloc(max(nbytes, 1)), "cudaMalloc"))
            self._buffers[name] = (ptr, nbytes)
        return ptr

    def __call__(self, feeds: Mapping[str, Any]) -> dict[str, np.ndarray]:
        """``feeds``: input name → array → output name → np.ndarray (fp16 outputs as float32)."""
        cudart = self._cudart
        h2d, d2h = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice, cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        feeds = check_feeds(self.inputs, feeds)
        keep = []
        for spec in self.inputs:
            x = np.ascontiguousarray(np.asarray(feeds[spec.name]), dtype=self._dtypes[spec.name])
            set_shape(self.context, spec.name, tuple(int(d) for d in x.shape), self.profiles[spec.name])
            ptr = self._buffer(spec.name, x.nbytes)
            _ok(cudart, cudart.cudaMemcpyAsync(ptr, x.ctypes.data, x.nbytes, h2d, self._stream), "memcpy")
            if not self.context.set_tensor_address(spec.name, ptr):
                raise FeedError(
                    spec.name, f"a {ALIGNMENT}-byte aligned device address", f"{ptr:#x} (refused)"
                )
            keep.append(x)
        out: dict[str, np.ndarray] = {}
        for spec in self.outputs:
            shape = tuple(int(d) for d in self.context.get_tensor_shape(spec.name))
            if any(d < 0 for d in shape):
                raise ConfigError(
                    "backend", "trt", f"output '{spec.name}' has a data-dependent shape; use --backend ort"
                )
            host = np.empty(shape, dtype=self._dtypes[spec.name])
            ptr = self._buffer(spec.name, host.nbytes)
            if not self.context.set_tensor_address(spec.name, ptr):
                raise FeedError(spec.name, "an output address TensorRT accepts", f"{ptr:#x}")
            out[spec.name] = host
        if not self.context.execute_async_v3(self._stream):
            raise EngineIncompatibleError(
                self.path, "this plan", "execute_async_v3 failed", "see the TRT log"
            )
        for spec in self.outputs:
            host = out[spec.name]
            ptr = self._buffers[spec.name][0]
            _ok(
                cudart,
                cudart.cudaMemcpyAsync(host.ctypes.data, ptr, host.nbytes, d2h, self._stream),
                "memcpy",
            )
        _ok(cudart, cudart.cudaStreamSynchronize(self._stream), "cudaStreamSynchronize")
        return {k: (v.astype(np.float32) if v.dtype == np.float16 else v) for k, v in out.items()}
