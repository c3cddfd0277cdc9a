"""The one Engine protocol, feed checks and the backend registry.

The engines layer knows nothing of SAM or CLIP: artifacts describe their tensors (names, dtypes,
symbolic axes, see :mod:`zsplg_runtime.tensors`), and engines only run them. Backends register
themselves with :func:`register_backend`; :func:`load_engine` picks one by name or by file suffix —
no if/elif over backends.

Usage::

    enc = load_engine("export/sam_encoder.onnx")                 # onnxruntime, CPU
    dec = load_engine("engines/sam_decoder_batched.fp16.plan")   # TensorRT
    ref = load_engine("export/sam_encoder.onnx", backend="torch")  # rebuilt from the sidecar
    out = enc({"image": x})  # dict name -> array
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from zsplg_runtime.errors import ConfigError
from zsplg_runtime.feeds import check_feeds
from zsplg_runtime.tensors import Dim, TensorSpec

__all__ = [
    "BackendInfo",
    "Dim",
    "Engine",
    "TensorSpec",
    "backends",
    "check_feeds",
    "load_engine",
    "register_backend",
]


@runtime_checkable
class Engine(Protocol):
    """Anything that runs an artifact: ``engine(feeds) -> outputs``.

    ``feeds`` maps input names to numpy arrays (or torch tensors on the engine's device);
    outputs are numpy arrays, or torch tensors on the device when the backend runs on a GPU.
    """

    inputs: Sequence[TensorSpec]
    outputs: Sequence[TensorSpec]
    backend: str
    device: str

    def __call__(self, feeds: Mapping[str, Any]) -> dict[str, Any]: ...


@dataclass
class BackendInfo:
    """A registered backend: how to open an artifact, which files it takes, and whether it can run here."""

    name: str
    loader: Callable[..., Engine]
    suffixes: tuple[str, ...] = ()
    available: Callable[[], str | None] = field(default=lambda: None)  # None = available, else the reason
    aliases: tuple[str, ...] = ()
    priority: int = 0  # lower wins when several backends open the same suffix


_BACKENDS: dict[str, BackendInfo] = {}


def register_backend(
    name: str,
    loader: Callable[..., Engine],
    suffixes: Sequence[str] = (),
    available: Callable[[], str | None] | None = None,
    aliases: Sequence[str] = (),
    priority: int = 0,
) -> None:
    """Register a backend. ``loader(path, **options) -> Engine``; ``available()`` → None or a reason.

    ``suffixes`` are the file endings it opens; ``aliases`` are other accepted names (``"onnxruntime"``
    for ``"ort"``); ``priority`` orders backends that open the same suffix (lowest is the default).
    """
    _BACKENDS[name] = BackendInfo(
        name, loader, tuple(suffixes), available or (lambda: None), tuple(aliases), priority
    )


def backends() -> dict[str, BackendInfo]:
    """All registered backends, by name (imports the built-in ones first)."""
    _import_builtin()
    return dict(_BACKENDS)


def _import_builtin() -> None:
    import importlib

    for mod in ("ort", "trt", "torch_engine"):  # order = default preference per suffix
        try:
            importlib.import_module(f"zsplg_fast.engines.{mod}")
        except ModuleNotFoundError as e:
            if not e.name or not e.name.startswith("zsplg_fast.engines"):
                raise


def _resolve(name: str) -> BackendInfo:
    for info in _BACKENDS.values():
        if name == info.name or name in info.aliases:
            return info
    valid = ", ".join(sorted(_BACKENDS))
    raise ConfigError("backend", name, "unknown backend", valid=valid)


def load_engine(path: str | Path, backend: str | None = None, **options: Any) -> Engine:
    """Open an artifact with ``backend`` (or the default backend for its file suffix).

    Args:
        path: ``export/<name>.onnx`` (onnxruntime, or torch rebuilt from the sidecar) or
            ``engines/<name>.<precision>.plan`` (TensorRT).
        backend: ``"torch"``, ``"ort"`` / ``"onnxruntime"``, ``"trt"`` / ``"tensorrt"``; None = by suffix.
        options: passed to the backend's loader (e.g. ``providers=["cuda"]`` for ort,
            ``device="cuda"`` / ``autocast="bf16"`` for torch).
    Raises:
        ConfigError: unknown backend, or a backend that cannot open this kind of file.
        MissingDependencyError: the backend's library is not installed.
    """
    _import_builtin()
    p = Path(path)
    openers = sorted(
        (b for b in _BACKENDS.values() if any(p.name.endswith(s) for s in b.suffixes)),
        key=lambda b: b.priority,
    )
    if backend is None:
        if not openers:
            raise ConfigError(
                "backend", None, f"no backend opens '{p.name}'", valid=", ".join(sorted(_BACKENDS))
            )
        info = openers[0]
    else:
        info = _resolve(backend)
        if info not in openers:
            valid = ", ".join(b.name for b in openers) or "none (expected .onnx or .plan)"
            raise ConfigError("backend", backend, f"cannot open '{p.name}'", valid=valid)
    return info.loader(p, **options)
