"""TrtEngine: a TensorRT plan (10.x or 11.x) behind the Engine API, with torch CUDA tensors as buffers.

Follows the TensorRT Python API (``IRuntime.deserialize_cuda_engine``, ``ICudaEngine.num_io_tensors``
/ ``get_tensor_name`` / ``get_tensor_mode`` / ``get_tensor_dtype``, ``IExecutionContext.set_input_shape``
/ ``set_tensor_address`` / ``execute_async_v3``). Before deserialising, the plan's sidecar is compared
with the running TensorRT and GPU (:func:`check_compatible`, pure Python): a plan is tied to the
TensorRT version (unless built version-compatible) and to the GPU's compute capability.

The plan is deserialised and its context created on the requested device. Every boolean the
context returns is checked: a shape outside the optimisation profile is a ``FeedError`` naming the
tensor, the shape and the profile's min/opt/max (checked before TensorRT sees it); tensor addresses
are 256-byte aligned (TensorRT's requirement; a misaligned view is copied into an aligned buffer).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from zsplg_fast.engines.base import check_feeds, register_backend
from zsplg_fast.errors import ConfigError, EngineIncompatibleError, FeedError
from zsplg_fast.export.artifact import read_sidecar
from zsplg_fast.export.tensors import TensorSpec
from zsplg_fast.export.trt_info import RuntimeInfo, require_tensorrt, runtime_info, tensorrt_missing_reason

ALIGNMENT = 256  # bytes; TensorRT's I/O address alignment
Profile = tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]


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
    """
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
    return tuple(tuple(int(d) for d in s) for s in shapes) if shapes else None  # type: ignore[return-value]


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


def aligned(t: Any, alignment: int = ALIGNMENT) -> Any:
    """``t`` itself when contiguous and its address is ``alignment``-byte aligned, else an aligned copy
    (a slice of a padded buffer on the same device, so the alignment holds on any allocator)."""
    t = t.contiguous()
    if t.data_ptr() % alignment == 0:
        return t
    import torch

    pad = alignment // t.element_size() + 1
    buf = torch.empty(t.numel() + pad, dtype=t.dtype, device=t.device)
    skip = (-buf.data_ptr() % alignment) // t.element_size()
    out = buf[skip : skip + t.numel()].view(t.shape)
    out.copy_(t)
    return out


def bind_input(context: Any, name: str, t: Any, profile: Profile | None) -> Any:
    """Set the shape and address of input ``name`` (returns the tensor to keep alive until the run).

    Raises:
        FeedError: a shape outside ``profile`` or refused by ``set_input_shape``, or an address refused
            by ``set_tensor_address``.
    """
    t = aligned(t)
    shape = tuple(int(d) for d in t.shape)
    check_profile(name, shape, profile)
    if not context.set_input_shape(name, shape):
        lo, mid, hi = profile or ((), (), ())
        raise FeedError(
            name,
            f"a shape TensorRT accepts (profile min {list(lo)}, opt {list(mid)}, max {list(hi)})",
            f"shape {list(shape)} (set_input_shape returned False)",
        )
    if not context.set_tensor_address(name, t.data_ptr()):
        raise FeedError(name, f"a {ALIGNMENT}-byte aligned device address", f"{t.data_ptr():#x} (refused)")
    return t


class TrtEngine:
    """Run a ``.plan``; feeds may be numpy or torch tensors, outputs are torch CUDA tensors.

    Args:
        path: ``engines/<name>.<precision>.plan`` with its ``.json`` sidecar.
        device: CUDA device index.
        strict_gpu: refuse a plan built on another GPU model of the same compute capability.
    Raises:
        MissingDependencyError: no tensorrt or no CUDA GPU.
        EngineIncompatibleError: TensorRT version / GPU mismatch, or a plan TensorRT cannot deserialise.
    """

    backend = "trt"

    def __init__(self, path: str | Path, device: int = 0, strict_gpu: bool = True) -> None:
        import torch

        self.path = Path(path)
        side = read_sidecar(self.path)
        trt = require_tensorrt("running TensorRT engines")
        running = runtime_info(device)
        check_compatible(side, running, self.path, strict_gpu)
        self._logger = trt.Logger(trt.Logger.WARNING)
        with torch.cuda.device(device):  # the plan and its context live on the requested GPU
            self._runtime = trt.Runtime(self._logger)
            if side.get("version_compatible"):
                self._runtime.engine_host_code_allowed = True
            self.engine = self._runtime.deserialize_cuda_engine(self.path.read_bytes())
            if self.engine is None:
                raise EngineIncompatibleError(
                    self.path,
                    "an unreadable or foreign plan",
                    running.describe(),
                    rebuild_command(side, self.path),
                )
            self.context = self.engine.create_execution_context()
        if self.context is None:
            raise EngineIncompatibleError(
                self.path, "a plan", "not enough GPU memory for an execution context", "free GPU memory"
            )
        self.device = f"cuda:{device}"
        self.inputs = [TensorSpec.from_dict(d) for d in side["inputs"]]
        self.outputs = [TensorSpec.from_dict(d) for d in side["outputs"]]
        self._torch_dtype = {
            trt.float32: torch.float32,
            trt.float16: torch.float16,
            trt.bfloat16: torch.bfloat16,
            trt.int32: torch.int32,
            trt.int64: torch.int64,
            trt.int8: torch.int8,
            trt.uint8: torch.uint8,
            trt.bool: torch.bool,
        }
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        is_input = {n: self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT for n in names}
        declared = {s.name for s in self.inputs} | {s.name for s in self.outputs}
        if set(names) != declared or {s.name for s in self.inputs} != {n for n in names if is_input[n]}:
            raise EngineIncompatibleError(
                self.path, f"tensors {sorted(names)}", f"a sidecar declaring {sorted(declared)}", "rebuild it"
            )
        self._dtypes = {n: self._torch_dtype[self.engine.get_tensor_dtype(n)] for n in names}
        self.profiles = {spec.name: profile_of(self.engine, side, spec.name) for spec in self.inputs}
        self.stream = torch.cuda.Stream(device=self.device)

    def __call__(self, feeds: Mapping[str, Any]) -> dict[str, Any]:
        import numpy as np
        import torch

        feeds = check_feeds(self.inputs, feeds)
        keep = []
        with torch.cuda.device(self.device):
            for spec in self.inputs:
                x = feeds[spec.name]
                t = torch.from_numpy(np.ascontiguousarray(x)) if isinstance(x, np.ndarray) else x
                t = t.to(self.device, self._dtypes[spec.name])
                keep.append(bind_input(self.context, spec.name, t, self.profiles[spec.name]))
            out: dict[str, Any] = {}
            for spec in self.outputs:
                shape = tuple(self.context.get_tensor_shape(spec.name))
                if any(d < 0 for d in shape):
                    raise ConfigError(
                        "backend",
                        "trt",
                        f"output '{spec.name}' has a data-dependent shape; use --backend ort",
                    )
                buf = aligned(torch.empty(shape, dtype=self._dtypes[spec.name], device=self.device))
                if not self.context.set_tensor_address(spec.name, buf.data_ptr()):
                    raise FeedError(spec.name, "an output address TensorRT accepts", f"{buf.data_ptr():#x}")
                out[spec.name] = buf
            self.stream.wait_stream(torch.cuda.current_stream(self.device))
            if not self.context.execute_async_v3(self.stream.cuda_stream):
                raise EngineIncompatibleError(
                    self.path, "this plan", "execute_async_v3 failed", "see the TRT log"
                )
            for t in (*keep, *out.values()):  # the allocator holds them until TensorRT's work is done
                t.record_stream(self.stream)
            torch.cuda.current_stream(self.device).wait_stream(self.stream)  # no host sync per call
        return {k: (v.float() if v.dtype in (torch.float16, torch.bfloat16) else v) for k, v in out.items()}


register_backend(
    "trt", TrtEngine, suffixes=(".plan",), available=tensorrt_missing_reason, aliases=("tensorrt",)
)
