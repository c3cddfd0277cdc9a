"""The timing harness: warm-up runs, then timed iterations until a time budget or an iteration cap.

- CUDA work is synchronised before the clock starts and before it stops (``sync``), so a timing is
  the device's, not the launch queue's;
- :func:`time_engine` measures an Engine twice on a GPU: with host↔device copies (numpy in, numpy
  out, what a caller holding host arrays gets) and device-resident (torch CUDA tensors in, outputs
  left on the device);
- peak memory: host RSS high-water mark over the warm-up and timed runs (Linux ``VmHWM``, reset
  through ``/proc/self/clear_refs``; elsewhere the process-lifetime ``ru_maxrss``) and, on CUDA, the
  torch allocator's max allocated bytes (onnxruntime / TensorRT internal pools are not seen by it).
"""

from __future__ import annotations

import resource
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from zsplg_fast.errors import ConfigError

Clock = Callable[[], float]


@dataclass
class Timing:
    """Timed runs of one callable. Times in milliseconds; memory in MiB (None = not measured).

    ``warmup_ms`` keeps the untimed first calls (the first one shows lazy initialisation / compilation).
    ``throughput`` is items per second at the median latency (``items`` per call: images, prompt sets,
    texts). ``stopped_by``: ``"budget"`` or ``"max_iters"``. ``rss_scope``: ``"cell"`` when the
    high-water mark was reset for this measurement, ``"process"`` when it is the process's lifetime peak.
    """

    iters: int
    warmup: int
    median_ms: float
    p90_ms: float
    mean_ms: float
    min_ms: float
    max_ms: float
    throughput: float
    items: int
    total_s: float
    stopped_by: str
    peak_rss_mib: float | None = None
    rss_scope: str | None = None
    cuda_max_allocated_mib: float | None = None
    times_ms: list[float] = field(default_factory=list)
    warmup_ms: list[float] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["times_ms"] = [round(t, 3) for t in self.times_ms]
        d["warmup_ms"] = [round(t, 3) for t in self.warmup_ms]
        return d


def _vm_hwm_kib() -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def reset_peak_rss() -> str:
    """Reset the RSS high-water mark if the OS allows; returns the scope later readings have."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return "cell"
    except OSError:
        return "process"


def peak_rss_mib() -> float:
    """Peak resident set size in MiB: ``VmHWM`` on Linux, else ``ru_maxrss`` (kB on Linux, bytes on macOS)."""
    hwm = _vm_hwm_kib()
    if hwm is not None:
        return hwm / 1024
    ru = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return ru / 2**20 if sys.platform == "darwin" else ru / 1024


def _cuda_reset(on: bool) -> None:
    if on:
        import torch

        torch.cuda.reset_peak_memory_stats()


def _cuda_peak(on: bool) -> float | None:
    if not on:
        return None
    import torch

    return torch.cuda.max_memory_allocated() / 2**20


def time_callable(
    fn: Callable[[], Any],
    *,
    warmup: int = 1,
    budget_s: float = 10.0,
    max_iters: int = 100,
    min_iters: int = 1,
    items: int = 1,
    sync: Callable[[], None] | None = None,
    cuda_memory: bool = False,
    clock: Clock = time.perf_counter,
) -> Timing:
    """Time ``fn()``: ``warmup`` untimed calls, then timed calls until ``budget_s`` is spent (at least
    ``min_iters``) or ``max_iters`` is reached.

    Args:
        fn: the work; its result is discarded.
        warmup: untimed calls first (first calls pay lazy initialisation, autotuning, compilation).
        budget_s: seconds of timed calls; a call that starts within the budget is completed and kept.
        max_iters / min_iters: caps on the number of timed calls.
        items: work items per call, for ``throughput``.
        sync: called before starting and before stopping each clock (``torch.cuda.synchronize``).
        cuda_memory: also record the torch CUDA allocator's max allocated bytes.
        clock: seconds, monotonic (injectable for tests).
    Raises:
        ConfigError: a negative warm-up, a non-positive budget, or min_iters > max_iters.
    """
    if warmup < 0 or budget_s <= 0 or min_iters < 1 or max_iters < min_iters:
        raise ConfigError(
            "bench.timing",
            {"warmup": warmup, "budget_s": budget_s, "min_iters": min_iters, "max_iters": max_iters},
            "need warmup >= 0, budget_s > 0, 1 <= min_iters <= max_iters",
        )
    done = sync or (lambda: None)
    scope = reset_peak_rss()
    _cuda_reset(cuda_memory)
    warm: list[float] = []
    done()
    for _ in range(warmup):
        t0 = clock()
        fn()
        done()
        warm.append(clock() - t0)
    times: list[float] = []
    start = clock()
    while len(times) < max_iters and (len(times) < min_iters or clock() - start < budget_s):
        t0 = clock()
        fn()
        done()
        times.append(clock() - t0)
    total = clock() - start
    arr = np.asarray(times) * 1000.0
    median = float(np.median(arr))
    return Timing(
        iters=len(times),
        warmup=warmup,
        median_ms=median,
        p90_ms=float(np.percentile(arr, 90)),
        mean_ms=float(arr.mean()),
        min_ms=float(arr.min()),
        max_ms=float(arr.max()),
        throughput=items / (median / 1000.0) if median > 0 else float("inf"),
        items=items,
        total_s=total,
        stopped_by="max_iters" if len(times) >= max_iters else "budget",
        peak_rss_mib=peak_rss_mib(),
        rss_scope=scope,
        cuda_max_allocated_mib=_cuda_peak(cuda_memory),
        times_ms=[float(t) for t in arr],
        warmup_ms=[t * 1000.0 for t in warm],
    )


def _on_cuda(engine: Any) -> bool:
    return str(getattr(engine, "device", "cpu")).startswith("cuda")


def _to_host(outputs: Mapping[str, Any]) -> dict[str, np.ndarray]:
    return {k: (v if isinstance(v, np.ndarray) else v.detach().cpu().numpy()) for k, v in outputs.items()}


def time_engine(
    engine: Any,
    feeds: Mapping[str, np.ndarray],
    *,
    device_resident: bool = False,
    warmup: int = 1,
    budget_s: float = 10.0,
    max_iters: int = 100,
    min_iters: int = 1,
    items: int = 1,
    clock: Clock = time.perf_counter,
) -> Timing:
    """Time ``engine(feeds)`` (an :class:`~zsplg_fast.engines.Engine`).

    Args:
        engine: any Engine; ``engine.device`` says where it runs.
        feeds: input name → numpy array (host).
        device_resident: on a CUDA engine, upload ``feeds`` once as torch CUDA tensors and leave the
            outputs on the device (no copies timed); otherwise every call takes host arrays and its
            outputs are brought back to host arrays (copies included). Ignored on CPU engines.
        others: as :func:`time_callable`.
    """
    cuda = _on_cuda(engine)
    sync: Callable[[], None] | None = None
    if cuda:
        import torch

        device = torch.device(str(engine.device))

        def sync() -> None:
            torch.cuda.synchronize(device)

    if cuda and device_resident:
        import torch

        dev_feeds = {k: torch.from_numpy(np.ascontiguousarray(v)).to(engine.device) for k, v in feeds.items()}

        def call() -> Any:
            return engine(dev_feeds)
    else:

        def call() -> Any:
            return _to_host(engine(feeds))

    return time_callable(
        call,
        warmup=warmup,
        budget_s=budget_s,
        max_iters=max_iters,
        min_iters=min_iters,
        items=items,
        sync=sync,
        cuda_memory=cuda,
        clock=clock,
    )
