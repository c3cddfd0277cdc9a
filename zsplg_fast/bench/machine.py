"""What a benchmark ran on: machine, library versions, allocator and thread settings.

Timings on these machines depend on glibc malloc tuning (shared measurements: SAM in torch eager is
1.6–1.8× faster with the tuned ``MALLOC_*`` variables) and on thread counts, so every report records
them, together with the process's nice value and CPU affinity.
"""

from __future__ import annotations

import os
import platform
from importlib import metadata
from pathlib import Path
from typing import Any

TUNED_MALLOC = {
    "MALLOC_MMAP_MAX_": "0",
    "MALLOC_TRIM_THRESHOLD_": "100000000000",
    "MALLOC_TOP_PAD_": "1000000000",
}
_ENV_KEYS = (
    *TUNED_MALLOC,
    "MALLOC_ARENA_MAX",
    "LD_PRELOAD",
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "CUDA_VISIBLE_DEVICES",
    "HF_HUB_OFFLINE",
)
_LIBRARIES = (
    "torch",
    "torchvision",
    "onnx",
    "onnxruntime",
    "onnxruntime-gpu",
    "onnxscript",
    "onnxconverter-common",
    "tensorrt",
    "open_clip_torch",
    "segment-anything",
    "numpy",
    "pillow",
    "matplotlib",
)


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _mem_total_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return None


def _cpu_flags() -> list[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return []
    flags = next((ln.split(":", 1)[1].split() for ln in text.splitlines() if ln.startswith("flags")), [])
    wanted = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_int8", "amx_bf16")
    return [f for f in wanted if f in flags]


def _gpu() -> dict[str, Any] | None:
    import torch

    if not torch.cuda.is_available():
        return None
    i = torch.cuda.current_device()
    major, minor = torch.cuda.get_device_capability(i)
    props = torch.cuda.get_device_properties(i)
    return {
        "name": torch.cuda.get_device_name(i),
        "compute_capability": f"{major}.{minor}",
        "memory_gib": round(props.total_memory / 2**30, 1),
        "count": torch.cuda.device_count(),
        "cuda": torch.version.cuda,
    }


def machine_info() -> dict[str, Any]:
    """CPU model and flags, logical cores, cores this process may use, memory, GPU (or None), OS."""
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count() or 1
    return {
        "cpu": _cpu_model(),
        "cpu_flags": _cpu_flags(),
        "logical_cores": os.cpu_count(),
        "usable_cores": usable,
        "memory_gib": _mem_total_gib(),
        "gpu": _gpu(),
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
    }


def library_versions() -> dict[str, str]:
    """Installed distribution versions (``"not installed"`` when absent) and onnxruntime's providers."""
    out: dict[str, str] = {}
    for name in _LIBRARIES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    try:
        import onnxruntime as ort

        out["onnxruntime_providers"] = ", ".join(ort.get_available_providers())
    except ImportError:
        out["onnxruntime_providers"] = "onnxruntime not installed"
    return out


def malloc_setting(env: dict[str, str] | None = None) -> str:
    """``"tuned glibc (...)"``, ``"jemalloc (LD_PRELOAD)"`` (tcmalloc, mimalloc) or ``"default glibc"``."""
    e = dict(os.environ if env is None else env)
    preload = e.get("LD_PRELOAD", "")
    for lib in ("jemalloc", "tcmalloc", "mimalloc"):
        if lib in preload:
            return f"{lib} (LD_PRELOAD)"
    if all(e.get(k) == v for k, v in TUNED_MALLOC.items()):
        return "tuned glibc (" + " ".join(f"{k}={v}" for k, v in TUNED_MALLOC.items()) + ")"
    partial = {k: e[k] for k in TUNED_MALLOC if k in e}
    return f"glibc, partly tuned {partial}" if partial else "default glibc"


def runtime_settings(ort_threads: int | None = None) -> dict[str, Any]:
    """Allocator, thread pools, nice value and the environment variables that change timings."""
    import torch

    try:
        nice = os.nice(0)
    except OSError:
        nice = None
    return {
        "malloc": malloc_setting(),
        "torch_threads": torch.get_num_threads(),
        "torch_interop_threads": torch.get_num_interop_threads(),
        "ort_intra_op_threads": ort_threads if ort_threads else "default (one per core)",
        "nice": nice,
        "env": {k: os.environ[k] for k in _ENV_KEYS if k in os.environ},
    }
