"""Open ONNX model files with one clear error when they are corrupt or truncated.

The loading points (``OrtSession`` session creation in :mod:`zsplg_runtime.ort`, which holds
:func:`ort_session` and :func:`invalid_onnx`, ``inspect`` / ``build`` reading the graph) call these
helpers instead of onnxruntime / onnx directly, so a bad file is a :class:`ModelFileError` naming the file
and saying to export it again, never a protobuf traceback.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from zsplg_runtime.ort import EXPORT_AGAIN, invalid_onnx, ort_session

from zsplg_fast.errors import CheckpointError

__all__ = ["EXPORT_AGAIN", "invalid_onnx", "load_onnx", "ort_session"]


def load_onnx(path: str | Path, load_external_data: bool = False) -> Any:
    """``onnx.load`` (graph only by default); a corrupt / truncated file raises :class:`ModelFileError`."""
    import onnx

    p = Path(path)
    if not p.is_file():
        raise CheckpointError(p, f"ONNX model not found; {EXPORT_AGAIN}")
    try:
        return onnx.load(str(p), load_external_data=load_external_data)
    except Exception as e:  # protobuf DecodeError, onnx's own errors for external data
        raise invalid_onnx(p, e) from e
