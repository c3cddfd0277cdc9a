"""What this CPU offers for reduced-precision inference (read from ``/proc/cpuinfo``'s flags)."""

from __future__ import annotations

from pathlib import Path

BF16_FLAGS = ("avx512_bf16", "amx_bf16")
"""Either one gives native bfloat16 dot products to oneDNN (CPU autocast bf16 is emulated without them)."""


def cpu_flags(cpuinfo: str | Path = "/proc/cpuinfo") -> set[str]:
    """The first processor's ``flags`` (empty when the file is missing: not Linux)."""
    try:
        text = Path(cpuinfo).read_text()
    except OSError:
        return set()
    return next(
        (set(ln.split(":", 1)[1].split()) for ln in text.splitlines() if ln.startswith("flags")), set()
    )


def cpu_bf16_flags(cpuinfo: str | Path = "/proc/cpuinfo") -> list[str]:
    """Which of :data:`BF16_FLAGS` the CPU has (empty: no native bf16)."""
    flags = cpu_flags(cpuinfo)
    return [f for f in BF16_FLAGS if f in flags]
