"""Field helpers that attach validation rules to dataclass fields (choices, ranges)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import field
from typing import Any


def opt(
    default: Any = None,
    *,
    choices: Sequence[Any] | None = None,
    ge: float | None = None,
    le: float | None = None,
    gt: float | None = None,
    lt: float | None = None,
    help: str = "",
    factory: Any = None,
) -> Any:
    """A dataclass field with validation metadata.

    Args:
        default: default value (ignored when ``factory`` is given).
        choices: the only allowed values.
        ge, le, gt, lt: numeric bounds (inclusive / exclusive).
        help: one line shown by ``config show --explain`` and in error messages.
        factory: default factory for mutable defaults (lists).
    """
    meta = {
        "choices": tuple(choices) if choices is not None else None,
        "ge": ge,
        "le": le,
        "gt": gt,
        "lt": lt,
    }
    meta["help"] = help
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


def describe_range(meta: dict[str, Any]) -> str | None:
    """Human-readable range from field metadata, e.g. ``[0, 1]`` or ``> 0``."""
    ge, le, gt, lt = meta.get("ge"), meta.get("le"), meta.get("gt"), meta.get("lt")
    lo = f"[{ge}" if ge is not None else (f"({gt}" if gt is not None else None)
    hi = f"{le}]" if le is not None else (f"{lt})" if lt is not None else None)
    if lo and hi:
        return f"{lo}, {hi}"
    if lo:
        return f">= {ge}" if ge is not None else f"> {gt}"
    if hi:
        return f"<= {le}" if le is not None else f"< {lt}"
    return None
