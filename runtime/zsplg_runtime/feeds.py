"""Feed checks shared by every session and engine: names, dtypes, ranks, fixed and symbolic sizes.

Works on numpy arrays and, by duck typing (``shape``, ``dtype``, ``float()``), on torch tensors, so the
torch engines above use the same checks without this package importing torch.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from zsplg_runtime.errors import FeedError
from zsplg_runtime.tensors import TensorSpec


def _shape_of(x: Any) -> tuple[int, ...]:
    return tuple(int(s) for s in x.shape)


def _dtype_name(x: Any) -> str:
    dt = getattr(x, "dtype", None)
    if dt is None:
        return type(x).__name__
    return str(dt).replace("torch.", "")


def check_feeds(specs: Sequence[TensorSpec], feeds: Mapping[str, Any]) -> dict[str, Any]:
    """Validate ``feeds`` against ``specs`` and return them (float64 → float32 where allowed).

    Checks, per input: present, no unknown names, dtype, rank, fixed sizes; symbolic axes that
    share a name must agree across inputs (e.g. one ``batch`` for all).
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
                hint = " (float64 is not cast for this input)" if dt == "float64" else ""
                raise FeedError(spec.name, f"dtype {spec.dtype}", f"dtype {dt}{hint}")
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
