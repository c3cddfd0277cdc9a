"""Artifact sidecars: ``export/<name>.json`` beside ``<name>.onnx`` and ``engines/<name>.<prec>.json``.

A sidecar says what the artifact is (spec, inputs/outputs with symbolic axes), how it was made
(exporter, opset, library versions, source weights sha256 or ``"random-init"``), how to feed it
(preprocessing, class names, palette) and how far it drifts from PyTorch (validation figures).
It is written last, atomically: an artifact without its sidecar is incomplete. Reading and checking
sidecars is :mod:`zsplg_runtime.sidecar`'s (re-exported here); writing them is this package's.
"""

from __future__ import annotations

import platform
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from zsplg_runtime.integrity import file_sha256
from zsplg_runtime.sidecar import (
    SIDECAR_VERSION,
    check_sidecar,
    data_path,
    open_artifact,
    read_sidecar,
    sidecar_path,
    verify_artifact,
)

from zsplg_fast.export.tensors import TensorSpec

__all__ = [
    "SIDECAR_VERSION",
    "Artifact",
    "check_sidecar",
    "data_path",
    "files_sha256",
    "library_versions",
    "open_artifact",
    "read_sidecar",
    "sidecar_path",
    "summarize_validation",
    "verify_artifact",
]

_VERSIONED = (
    "torch",
    "onnx",
    "onnxruntime",
    "onnxscript",
    "segment-anything",
    "open_clip_torch",
    "numpy",
    "tensorrt",
)


def library_versions(names: Sequence[str] = _VERSIONED) -> dict[str, str]:
    """Installed version of each distribution (``"not installed"`` when absent)."""
    out = {}
    for n in names:
        try:
            out[n] = metadata.version(n)
        except metadata.PackageNotFoundError:
            out[n] = "not installed"
    return out


def files_sha256(paths: Sequence[Path]) -> str:
    """sha256 of the files' sha256s, in order (model + external data as one identity); each file's hash
    comes from utils/integrity's cache when the file is unchanged."""
    from zsplg_runtime.integrity import combined_sha256

    return combined_sha256(file_sha256(p) for p in paths)


def now_iso() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def host() -> dict[str, str]:
    return {"machine": platform.machine(), "python": platform.python_version(), "system": platform.system()}


@dataclass
class Artifact:
    """An artifact on disk and its sidecar."""

    path: Path
    sidecar: dict[str, Any]

    @classmethod
    def open(cls, path: str | Path) -> Artifact:
        return cls(Path(path), read_sidecar(path))

    @property
    def name(self) -> str:
        return str(self.sidecar.get("name", self.path.stem))

    @property
    def precision(self) -> str:
        """``fp32`` | ``fp16`` | ``bf16`` | ``int8``; a sidecar without the field is an fp32 export."""
        return str(self.sidecar.get("precision", "fp32"))

    @property
    def inputs(self) -> list[TensorSpec]:
        return [TensorSpec.from_dict(d) for d in self.sidecar.get("inputs", [])]

    @property
    def outputs(self) -> list[TensorSpec]:
        return [TensorSpec.from_dict(d) for d in self.sidecar.get("outputs", [])]

    @property
    def files(self) -> list[Path]:
        """Every file of the artifact (model, external data if any, sidecar)."""
        out = [self.path]
        if data_path(self.path).exists():
            out.append(data_path(self.path))
        return [*out, sidecar_path(self.path)]

    @property
    def size_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.files[:-1])


def summarize_validation(parity: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    """Worst max abs and min cosine over outputs, for tables."""
    return {
        "max_abs": max((float(p["max_abs"]) for p in parity), default=0.0),
        "cosine": min((float(p["cosine"]) for p in parity), default=1.0),
    }
