"""TensorRT helpers shared by the builder (export/tensorrt.py) and the runtime.

TensorRT is optional and cannot be installed everywhere: it is imported lazily, and its absence is a
``MissingDependencyError`` that says how to install it or what to use instead. The helpers live in the
torch-free :mod:`zsplg_runtime.trt`; :func:`runtime_info` here reads the GPU through torch.
"""

from __future__ import annotations

from zsplg_runtime.trt import TRT_INSTALL, RuntimeInfo, require_tensorrt, tensorrt_missing_reason

from zsplg_fast.utils.gpu import torch_runtime_info as runtime_info

__all__ = ["TRT_INSTALL", "RuntimeInfo", "require_tensorrt", "runtime_info", "tensorrt_missing_reason"]
