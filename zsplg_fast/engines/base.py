"""The one Engine protocol, tensor metadata, feed checks and the backend registry.

The engines layer knows nothing of SAM or CLIP: artifacts describe their tensors (names, dtypes,
symbolic axes), and engines only run them. Backends register themselves with
:func:`register_backend`; :func:`load_engine` picks one by name or by file suffix — no if/elif.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from zsplg_fast.errors import ConfigError, FeedError

Dim = int | str  # a fixed size, or a symbolic axis name such as "batch"


@dataclass(frozen=True)
class TensorSpec:
    """Name, dtype and shape of one engine input or output.

    ``shape`` entries are ints (fixed) or strings (symbolic axes, e.g. ``"batch"``).
    ``allow_float64`` lets float64 feeds be cast to float32 for this input.
    """

    name: str
    dtype: str  # numpy dtype name: "float32", "int64", "uint8", ...
    shape: tuple[Dim, ...]
    allow_float64: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "dtype": self.dtype, "shape": list(self.shape)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TensorSpec:
        return cls(d["name"], d["dtype"], tuple(d["shape"]), bool(d.get("allow_float64", False)))


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


def _shape_of(x: Any) -> tuple[int, ...]:
    return tuple(int(s) for s in x.shape)


def _dtype_name(x: Any) -> str:
    dt = getattr(x, "dtype", None)
    if dt is None:
        return type(x).__name__
    name = str(dt)
    return name.replace("torch.", "")


def check_feeds(specs: Sequence[TensorSpec], feeds: Mapping[str, Any]) -> dict[str, Any]:
    """Validate ``feeds`` against ``specs`` and return them (float64 → float32 where allowed).

    Symbolic axes that share a name must agree across inputs (e.g. one ``batch`` for all).
    Raises FeedError naming the input, what was expected and what was got.
    """
    out: dict[str, Any] = {}
    names = {s.name for s in specs}
    extra = sorted(set(feeds) - names)
    if extra:
        raise FeedError(extra[0], f"one of {sorted(names)}", "an unknown input name")
    bound: dict[str, tuple[int, str]] = {}
    for spec in specs:
        if spec.name not in feeds:
            raise FeedError(spec.name, f"{spec.dtype}{list(spec.shape)}", "nothing (missing input)")
        x = feeds[spec.name]
        if not hasattr(x, "shape"):
            x = np.asarray(x)
        dt = _dtype_name(x)
        if dt != spec.dtype:
            if dt == "float64" and spec.dtype == "float32" and spec.allow_float64:
                x = x.astype(np.float32) if isinstance(x, np.ndarray) else x.float()
            else:
                raise FeedError(spec.name, f"dtype {spec.dtype}", f"dtype {dt}")
        shape = _shape_of(x)
        if len(shape) != len(spec.shape):
            raise FeedError(spec.name, f"rank {len(spec.shape)} {list(spec.shape)}", f"shape {list(shape)}")
        for axis, (want, got) in enumerate(zip(spec.shape, shape, strict=True)):
            if isinstance(want, int):
                if want != got:
                    raise FeedError(
                        spec.name, f"size {want} on axis {axis} of {list(spec.shape)}", f"shape {list(shape)}"
                    )
            else:
                if want in bound and bound[want][0] != got:
                    other = bound[want][1]
                    raise FeedError(
                        spec.name,
                        f"axis '{want}' = {bound[want][0]} (as in input '{other}')",
                        f"shape {list(shape)}",
                    )
                bound.setdefault(want, (got, spec.name))
        out[spec.name] = x
    return out


@dataclass
class BackendInfo:
    """A registered backend: how to open an artifact, which files it takes, and whether it can run here."""

    name: str
    loader: Callable[..., Engine]
    suffixes: tuple[str, ...] = ()
    available: Callable[[], str | None] = field(default=lambda: None)  # None = available, else the reason


_BACKENDS: dict[str, BackendInfo] = {}


def register_backend(
    name: str,
    loader: Callable[..., Engine],
    suffixes: Sequence[str] = (),
    available: Callable[[], str | None] | None = None,
) -> None:
    """Register a backend. ``loader(path, **options) -> Engine``; ``available()`` → None or a reason."""
    _BACKENDS[name] = BackendInfo(name, loader, tuple(suffixes), available or (lambda: None))


def backends() -> dict[str, BackendInfo]:
    """All registered backends, by name (imports the built-in ones first)."""
    _import_builtin()
    return dict(_BACKENDS)


def _import_builtin() -> None:
    import importlib

    for mod in ("torch_engine", "ort", "trt"):
        try:
            importlib.import_module(f"zsplg_fast.engines.{mod}")
        except ModuleNotFoundError as e:
            if not e.name or not e.name.startswith("zsplg_fast.engines"):
                raise


def load_engine(path: str | Path, backend: str | None = None, **options: Any) -> Engine:
    """Open an artifact with ``backend`` (or the backend registered for its file suffix)."""
    _import_builtin()
    p = Path(path)
    if backend is None:
        matches = [b for b in _BACKENDS.values() if any(p.name.endswith(s) for s in b.suffixes)]
        if not matches:
            raise ConfigError(
                "backend", None, f"no backend opens '{p.name}'", valid=", ".join(sorted(_BACKENDS))
            )
        info = matches[0]
    else:
        if backend not in _BACKENDS:
            raise ConfigError("backend", backend, "unknown backend", valid=", ".join(sorted(_BACKENDS)))
        info = _BACKENDS[backend]
    return info.loader(p, **options)
