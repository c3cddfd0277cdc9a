"""Open ONNX model files with one clear error when they are corrupt or truncated.

The loading points (``OrtEngine`` session creation, ``inspect`` / ``build`` reading the graph) call these
helpers instead of onnxruntime / onnx directly, so a bad file is a :class:`ModelFileError` naming the file
and saying to export it again, never a protobuf traceback.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from zsplg_fast.errors import CheckpointError, ModelFileError

EXPORT_AGAIN = "export it again (zsplg-fast export / deploy) or copy the whole folder again"
# onnxruntime's pybind error classes raised when the file itself is bad (not a provider problem)
_ORT_FILE_ERRORS = ("InvalidProtobuf", "InvalidGraph", "NoModel", "NoSuchFile", "ModelLoaded")


def invalid_onnx(path: str | Path, err: BaseException) -> ModelFileError:
    """The error for an ONNX file that onnx / onnxruntime cannot parse."""
    text = str(err).splitlines()[0] if str(err) else ""
    text = text.split("failed:")[-1].strip()[:160]
    return ModelFileError(path, f"not a valid ONNX model ({type(err).__name__}: {text})", EXPORT_AGAIN)


def _is_file_error(err: BaseException) -> bool:
    return type(err).__name__ in _ORT_FILE_ERRORS or "Load model from" in str(err)


def ort_session(ort: Any, path: str | Path, options: Any, providers: list[Any]) -> Any:
    """``ort.InferenceSession(path, options, providers=providers)``; a corrupt / truncated file (or
    missing external data) raises :class:`ModelFileError`; other errors pass through unchanged."""
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(p, f"ONNX model not found; {EXPORT_AGAIN}")
    try:
        return ort.InferenceSession(str(p), options, providers=providers)
    except Exception as e:
        if _is_file_error(e) or _fails_checker(p):
            raise invalid_onnx(p, e) from e
        raise


def _fails_checker(path: Path) -> bool:
    """True when ``onnx.checker`` refuses the file: a damaged model that still parses (a flipped byte in
    a tensor or a name) makes onnxruntime raise Fail / InvalidArgument / TypeError, which are also what
    a provider problem raises; the checker tells them apart. Only called after a failure."""
    import onnx

    try:
        onnx.checker.check_model(str(path))
    except Exception:  # ValidationError, DecodeError, UnicodeDecodeError: all mean a bad file
        return True
    return False


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
