"""Artifact sidecars: ``<name>.json`` beside ``<name>.onnx`` / ``<name>.<precision>.plan``.

A sidecar says what the artifact is (inputs/outputs with symbolic axes), how it was made (library
versions, source weights), how to feed it (preprocessing, class names, palette). This module reads and
checks sidecars; writing them is ``zsplg_fast.export``'s job (it needs the exporters).

:func:`open_artifact` is the one place where an artifact file is accepted before a session opens it:
the sidecar's version is checked here, and so is the artifact against the sidecar (:func:`verify_artifact`).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

from zsplg_runtime import integrity
from zsplg_runtime.errors import CheckpointError, SidecarError
from zsplg_runtime.sidecar_fields import check_fields

SIDECAR_VERSION = 1


def sidecar_path(artifact: str | Path) -> Path:
    """``export/x.onnx`` → ``export/x.json``; ``engines/x.fp16.plan`` → ``engines/x.fp16.json``."""
    return Path(artifact).with_suffix(".json")


def data_path(onnx_path: str | Path) -> Path:
    """The external-data file of an ONNX artifact: ``x.onnx`` → ``x.onnx.data``."""
    p = Path(onnx_path)
    return p.with_name(p.name + ".data")


def read_sidecar(artifact: str | Path) -> dict[str, Any]:
    """Read the sidecar of ``artifact`` (or a ``.json`` path itself), checked by :func:`check_sidecar`.

    Raises:
        CheckpointError: missing or unreadable sidecar (the artifact is incomplete: re-export it).
        SidecarError: a sidecar newer than this code reads.
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


# recorded library → installed distributions whose major version must match (a plan's TensorRT
# version is checked strictly by the TRT session; here a difference is only worth a warning)
_MAJOR_CHECKED = {
    "onnxruntime": ("onnxruntime", "onnxruntime-gpu"),
    "torch": ("torch",),
    "tensorrt": ("tensorrt", "tensorrt-cu12", "tensorrt-cu13"),
}
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
    onnxruntime / torch / TensorRT major version differs from the installed one (a library that is not
    installed here, such as torch on an edge device, is not compared).

    Raises:
        SidecarError: ``sidecar_version`` is above :data:`SIDECAR_VERSION` or not an integer, or a field
            readers use has the wrong type (:mod:`zsplg_runtime.sidecar_fields`).
    """
    v = side.get("sidecar_version", 1)
    if not isinstance(v, int) or isinstance(v, bool):
        raise SidecarError(path, f"sidecar_version {v!r} is not an integer; export it again")
    if v > SIDECAR_VERSION:
        raise SidecarError(
            path,
            f"sidecar_version {v} is newer than this zsplg-fast reads ({SIDECAR_VERSION}); "
            "upgrade zsplg-fast (or zsplg-fast-runtime) or export the artifact again with this one",
        )
    check_fields(side, path)  # the types of the fields readers index into
    recorded = dict(side.get("versions") or {})
    for lib, dists in _MAJOR_CHECKED.items():
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


def verify_artifact(artifact: Path, side: Mapping[str, Any]) -> dict[str, Any]:
    """Check the artifact file against its sidecar before any session opens it.

    The single place for the artifact integrity check: the file must exist, and its size and sha256
    (and those of its external data) must match the sidecar's record (:mod:`zsplg_runtime.integrity`,
    hashes cached by path, size, mtime, ctime and inode). Every loader of the runtime and of
    ``zsplg_fast.engines`` goes through :func:`open_artifact`, so this covers ``infer``,
    ``label --engines``, ``Segmenter.load`` and the TRT plans alike.

    Returns:
        the check's result (``status``: verified / size only / not recorded; ``hashed``: files hashed).
    Raises:
        CheckpointError: the artifact file is missing.
        ArtifactIntegrityError: a file's size or sha256 differs from the record (exit 2).
    """
    if not Path(artifact).is_file():
        raise CheckpointError(artifact, "artifact file missing beside its sidecar; export it again")
    return integrity.verify_artifact(artifact, side)


def open_artifact(artifact: str | Path, required: bool = True) -> dict[str, Any]:
    """The sidecar of ``artifact`` after both checks (:func:`check_sidecar`, :func:`verify_artifact`);
    ``{}`` when ``required`` is False and the artifact has no sidecar (a bare ONNX file)."""
    p = Path(artifact)
    if not required and not sidecar_path(p).is_file():
        return {}
    side = read_sidecar(p)
    verify_artifact(p, side)
    return side
