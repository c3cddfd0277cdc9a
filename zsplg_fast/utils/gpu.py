"""The running TensorRT and GPU read through torch (the full package always has torch; the runtime
distribution reads the same through cuda-python: :func:`zsplg_runtime.trt.runtime_info`)."""

from __future__ import annotations

from zsplg_runtime.errors import MissingDependencyError
from zsplg_runtime.trt import RuntimeInfo, require_tensorrt


def torch_runtime_info(device: int = 0) -> RuntimeInfo:
    """The running TensorRT and GPU (needs tensorrt and a CUDA device)."""
    import torch

    trt = require_tensorrt()
    if not torch.cuda.is_available():
        raise MissingDependencyError("a CUDA GPU", "TensorRT engines", "run on a machine with an NVIDIA GPU")
    major, minor = torch.cuda.get_device_capability(device)
    return RuntimeInfo(str(trt.__version__), torch.cuda.get_device_name(device), f"{major}.{minor}")
