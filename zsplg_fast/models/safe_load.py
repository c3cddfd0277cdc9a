"""Load ``.pth`` files without running code from them: ``torch.load(weights_only=True)`` + a short allow-list.

A pickle can name any importable callable; ``weights_only=False`` calls it (a shared checkpoint could write
files or run a shell). With ``weights_only=True`` torch's restricted unpickler admits tensors, containers
and primitives only, plus the globals allow-listed here: the numpy types that ``np.random.get_state()``
puts into our training checkpoints' RNG state (follows torch.serialization's ``safe_globals`` docs).
Anything else is refused with a :class:`ModelFileError` naming the globals the file asks for, which
``torch.serialization.get_unsafe_globals_in_checkpoint`` reads without unpickling.
"""

from __future__ import annotations

import contextlib
import pickle
import re
from pathlib import Path
from typing import Any

from zsplg_fast.errors import CheckpointError, ModelFileError

RESAVE = "load it in a trusted session and re-save only its state_dict (tensors, numbers, strings)"


def allowed_globals() -> list[Any]:
    """The non-tensor types our own checkpoints hold: numpy arrays/dtypes of the saved RNG state."""
    import numpy as np

    try:
        from numpy._core.multiarray import _reconstruct
    except ImportError:  # numpy < 2
        from numpy.core.multiarray import _reconstruct  # type: ignore[no-redef]
    return [_reconstruct, np.ndarray, np.dtype, type(np.dtype(np.uint32))]


def _unsafe_globals(path: Path) -> list[str]:
    import torch

    try:  # torch >= 2.5; reads the pickle without running it
        return list(torch.serialization.get_unsafe_globals_in_checkpoint(str(path)))
    except Exception:  # not a zip checkpoint, or unreadable: the caller's message says so
        return []


def load_torch_file(path: str | Path, what: str = "checkpoint") -> Any:
    """``torch.load`` on CPU with ``weights_only=True`` and :func:`allowed_globals`.

    Raises:
        CheckpointError: missing file.
        ModelFileError: a file asking for other globals (refused, never unpickled), or a corrupt /
            truncated / non-torch file.
    """
    import torch

    p = Path(path)
    if not p.is_file():
        raise CheckpointError(p, f"{what} not found")
    allowed = allowed_globals()
    names = {f"{g.__module__}.{g.__qualname__}" for g in allowed}
    scoped = getattr(torch.serialization, "safe_globals", None)  # torch >= 2.5; 2.4 has add_safe_globals
    if scoped is None:
        torch.serialization.add_safe_globals(allowed)
    try:
        with scoped(allowed) if scoped is not None else contextlib.nullcontext():
            return torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises several types for truncated / non-pickle files
        raise (refusal(p, what, e, names) or _corrupt(p, what, e)) from e


def refusal(
    path: str | Path, what: str, e: BaseException, allowed: set[str] | None = None
) -> ModelFileError | None:
    """The complete one-line reason a ``weights_only=True`` load was refused, or None when ``e`` (or an
    exception it was raised from) is not such a refusal.

    For loads done here and by libraries that call ``torch.load(weights_only=True)`` themselves
    (open_clip): torch's own text is many lines of advice, and its first line stops mid-sentence. The
    message names the globals the file asks for (``allowed`` names excepted), read without unpickling.
    """
    cause: BaseException | None = e
    while cause is not None and not isinstance(cause, pickle.UnpicklingError):
        cause = cause.__cause__ or cause.__context__
    if cause is None:
        return None
    p = Path(path)
    found = re.findall(r"Unsupported global: GLOBAL (\S+)", str(cause))
    extra = [g for g in _unsafe_globals(p) if g not in (allowed or set())] or found
    if not extra:
        return None
    return ModelFileError(
        p,
        f"refused to load this {what}: unpickling it would call {', '.join(extra[:5])}, which is "
        "not a tensor, number or string (loaded with weights_only=True, so a shared file cannot "
        "run code)",
        RESAVE,
    )


def _corrupt(p: Path, what: str, e: Exception) -> ModelFileError:
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    detail = next((ln for ln in lines if "Unsupported operand" in ln or "invalid load key" in ln), None)
    reason = (detail or (lines[0] if lines else ""))[:100]
    return ModelFileError(
        p,
        f"not a valid torch {what} ({type(e).__name__}: {reason})",
        "the file is corrupt or truncated; copy, download or train it again",
    )
