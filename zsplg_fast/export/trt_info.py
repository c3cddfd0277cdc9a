"""TensorRT helpers shared by the builder (export/tensorrt.py) and the runtime (engines/trt.py).

TensorRT is optional and cannot be installed everywhere: it is imported lazily, and its absence is a
``MissingDependencyError`` that says how to install it or what to use instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import ModuleType

from zsplg_fast.errors import MissingDependencyError

TRT_INSTALL = (
    "on a machine with an NVIDIA GPU and CUDA 12/13: pip install 'tensorrt>=10,<12' (the 'gpu' extra of "
    "zsplg-fast; the wheel comes from NVIDIA's index), or use --backend ort / torch"
)


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


@dataclass(frozen=True)
class RuntimeInfo:
    """What a plan is tied to: TensorRT version, GPU name, compute capability (``"9.0"``)."""

    tensorrt: str
    gpu: str
    compute_capability: str

    def describe(self) -> str:
        return f"TensorRT {self.tensorrt} on {self.gpu} (compute capability {self.compute_capability})"


def runtime_info(device: int = 0) -> RuntimeInfo:
    """The running TensorRT and GPU (needs tensorrt and a CUDA device)."""
    import torch

    trt = require_tensorrt()
    if not torch.cuda.is_available():
        raise MissingDependencyError("a CUDA GPU", "TensorRT engines", "run on a machine with an NVIDIA GPU")
    major, minor = torch.cuda.get_device_capability(device)
    return RuntimeInfo(str(trt.__version__), torch.cuda.get_device_name(device), f"{major}.{minor}")
