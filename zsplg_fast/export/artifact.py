"""Artifact sidecars: ``export/<name>.json`` beside ``<name>.onnx`` and ``engines/<name>.<prec>.json``.

A sidecar says what the artifact is (spec, inputs/outputs with symbolic axes), how it was made
(exporter, opset, library versions, source weights sha256 or ``"random-init"``), how to feed it
(preprocessing, class names, palette) and how far it drifts from PyTorch (validation figures).
It is written last, atomically: an artifact without its sidecar is incomplete.
"""

from __future__ import annotations

import json
import platform
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from zsplg_fast.errors import CheckpointError, SidecarError
from zsplg_fast.export.tensors import TensorSpec
from zsplg_fast.utils.io import sha256_file

SIDECAR_VERSION = 1
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


def sidecar_path(artifact: str | Path) -> Path:
    """``export/x.onnx`` → ``export/x.json``; ``engines/x.fp16.plan`` → ``engines/x.fp16.json``."""
    p = Path(artifact)
    return p.with_suffix(".json")


def data_path(onnx_path: str | Path) -> Path:
    """The external-data file of an ONNX artifact: ``x.onnx`` → ``x.onnx.data``."""
    p = Path(onnx_path)
    return p.with_name(p.name + ".data")


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
    """sha256 of the files' sha256s, in order (model + external data as one identity)."""
    import hashlib

    h = hashlib.sha256()
    for p in paths:
        h.update(sha256_file(p).encode())
    return h.hexdigest()


def now_iso() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def host() -> dict[str, str]:
    return {"machine": platform.machine(), "python": platform.python_version(), "system": platform.system()}


def read_sidecar(artifact: str | Path) -> dict[str, Any]:
    """Read the sidecar of ``artifact`` (or a ``.json`` path itself).

    Raises:
        CheckpointError: missing or unreadable sidecar (the artifact is incomplete: re-export it).
    """
    p = Path(artifact)
    side = p if p.suffix == ".json" else sidecar_path(p)
    if not side.is_file():
        raise CheckpointError(side, "sidecar missing: the artifact is incomplete; export it again")
    try:
        data = json.loads(side.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise CheckpointError(side, f"unreadable sidecar ({type(e).__name__}); export it again") from e
    if not isinstance(data, dict):
        raise CheckpointError(side, "sidecar is not a JSON object; export it again")
    check_sidecar(data, side)
    return data


# recorded library → installed distribution whose major version must match (a plan's TensorRT
# version is checked strictly by engines/trt.py; here a difference is only worth a warning)
_MAJOR_CHECKED = {"onnxruntime": ("onnxruntime", "onnxruntime-gpu"), "torch": ("torch",)}
_warned: set[tuple[str, str]] = set()


def _installed(dists: Sequence[str]) -> str | None:
    for d in dists:
        try:
            return metadata.version(d)
        except metadata.PackageNotFoundError:
            continue
    return None


def _major(v: str) -> str:
    return v.split(".")[0].split("+")[0]


def check_sidecar(side: Mapping[str, Any], path: str | Path) -> None:
    """Refuse a sidecar newer than this code reads; warn (once per file and library) when the recorded
    onnxruntime / torch / TensorRT major version differs from the installed one.

    Raises:
        SidecarError: ``sidecar_version`` is above :data:`SIDECAR_VERSION` or not an integer, or a field
            readers use has the wrong type (:mod:`zsplg_fast.export.sidecar_fields`).
    """
    import logging

    v = side.get("sidecar_version", 1)
    if not isinstance(v, int) or isinstance(v, bool):
        raise SidecarError(path, f"sidecar_version {v!r} is not an integer; export it again")
    if v > SIDECAR_VERSION:
        raise SidecarError(
            path,
            f"sidecar_version {v} is newer than this zsplg-fast reads ({SIDECAR_VERSION}); "
            "upgrade zsplg-fast or export the artifact again with this one",
        )
    from zsplg_fast.export.sidecar_fields import check_fields

    check_fields(side, path)  # the types of the fields readers index into
    recorded = dict(side.get("versions") or {})  # a plan's own "tensorrt" is engines/trt.py's (an error)
    checked = {**_MAJOR_CHECKED, "tensorrt": ("tensorrt", "tensorrt-cu12", "tensorrt-cu13")}
    for lib, dists in checked.items():
        was = recorded.get(lib)
        now = _installed(dists)
        if not isinstance(was, str) or was == "not installed" or now is None:
            continue
        if _major(was) != _major(now) and (str(path), lib) not in _warned:
            _warned.add((str(path), lib))
            logging.getLogger("zsplg_fast.export").warning(
                "%s: recorded with %s %s, running %s %s (major versions differ); results may differ, "
                "export it again with this install to be sure",
                path,
                lib,
                was,
                lib,
                now,
            )


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
