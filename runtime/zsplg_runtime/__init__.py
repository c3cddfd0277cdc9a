"""zsplg-fast-runtime: run a zsplg-fast deploy folder without PyTorch (onnxruntime, or TensorRT with
the ``[trt]`` extra). ``Segmenter.load(deploy_dir).predict(image) -> (H, W) uint8``; the
``zsplg-runtime infer`` command. Imports only the standard library, numpy, PIL and the engine libraries.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["Segmenter", "__version__"]


def __getattr__(name: str) -> Any:  # lazy: `import zsplg_runtime.errors` stays light
    if name == "Segmenter":
        from zsplg_runtime.segmenter import Segmenter

        return Segmenter
    raise AttributeError(name)
