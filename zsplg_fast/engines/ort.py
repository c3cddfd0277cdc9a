"""OrtEngine: the runtime's :class:`zsplg_runtime.ort.OrtSession` plus the torch layer (IOBinding, streams).

Session creation, provider checks and fallbacks (:data:`PROVIDERS`, ``ProviderFallbackError``, the
TensorRT provider's profiles and caches) are the torch-free runtime's (``zsplg_runtime.ort``), re-exported
here. This module adds what needs torch: on CUDA, torch CUDA tensors are bound in place with IOBinding and
outputs are torch tensors on the device without copies: bound to torch buffers when their shapes follow
from the inputs, else wrapped with ``torch.from_dlpack`` (where onnxruntime's OrtValue implements
``__dlpack__``, as 1.32 here; 1.22's has none, and there such an output is copied through the host:
see :func:`ortvalue_to_torch`). onnxruntime runs on its own torch stream (``user_compute_stream``), which
waits for torch's current stream before each run (the inputs were written there) and is waited on after it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from zsplg_runtime.feeds import check_feeds
from zsplg_runtime.ort import (
    GPU_INSTALL,
    PROVIDERS,
    TRT_EP_FALLBACK,
    OrtSession,
    import_ort,
    ort_missing_reason,
    trt_provider_options,
)
from zsplg_runtime.tensors import spec_profiles

from zsplg_fast.engines.base import register_backend

__all__ = [
    "GPU_INSTALL",
    "PROVIDERS",
    "TRT_EP_FALLBACK",
    "OrtEngine",
    "ortvalue_to_torch",
    "spec_profiles",
    "trt_provider_options",
]


_ort = import_ort  # onnxruntime, or MissingDependencyError with the install command


def _torch_stream(device_id: int) -> Any:
    """A torch CUDA stream for onnxruntime to run on (non-default: onnxruntime ignores stream 0)."""
    import torch

    if not torch.cuda.is_available():  # the session will fall back and say so
        return None
    return torch.cuda.Stream(device=f"cuda:{device_id}")


def _current_stream(device_id: int) -> Any:
    import torch

    return torch.cuda.current_stream(f"cuda:{device_id}")


def ortvalue_to_torch(value: Any, device: str) -> Any:
    """An output OrtValue as a torch tensor on ``device``: without a copy through ``__dlpack__``
    (onnxruntime 1.32 here), else (older releases such as 1.22, whose OrtValue has no ``__dlpack__``) copied
    through the host with ``OrtValue.numpy()``, then moved to ``device``."""
    import torch

    if hasattr(value, "__dlpack__"):
        return torch.from_dlpack(value)
    return torch.from_numpy(np.ascontiguousarray(value.numpy())).to(device)


class OrtEngine(OrtSession):
    """An onnxruntime session behind the Engine API; numpy feeds run as in :class:`OrtSession`,
    torch CUDA feeds through IOBinding (outputs: torch tensors on the device).

    Args: as :class:`zsplg_runtime.ort.OrtSession`; on a GPU provider the session runs on a torch
    stream of ``device_id``.
    """

    backend = "ort"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._stream: Any = None
        super().__init__(*args, **kwargs)

    def _compute_stream(self, device_id: int) -> str | None:
        self._stream = _torch_stream(device_id)
        return None if self._stream is None else str(self._stream.cuda_stream)

    def __call__(self, feeds: Mapping[str, Any]) -> dict[str, Any]:
        feeds = check_feeds(self.inputs, feeds)
        if any(getattr(getattr(v, "device", None), "type", "cpu") == "cuda" for v in feeds.values()):
            return self._run_bound(feeds)
        arrays = {k: (v if isinstance(v, np.ndarray) else v.detach().cpu().numpy()) for k, v in feeds.items()}
        return self.run_numpy(arrays)

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
                out[spec.name] = ortvalue_to_torch(value, f"{device}:{index}")
        return out


def _available() -> str | None:
    return ort_missing_reason()


register_backend("ort", OrtEngine, suffixes=(".onnx",), available=_available, aliases=("onnxruntime",))
