"""The timing harness with a fake clock: warm-up, budget, iteration caps, statistics, engine copies."""

from __future__ import annotations

import numpy as np
import pytest

from zsplg_fast.bench.timing import peak_rss_mib, time_callable, time_engine
from zsplg_fast.errors import ConfigError


class FakeClock:
    """Each ``fn()`` call advances time by the next duration; reading the clock costs nothing."""

    def __init__(self, durations: list[float]) -> None:
        self.t = 0.0
        self.durations = list(durations)
        self.calls = 0

    def __call__(self) -> float:
        return self.t

    def work(self) -> None:
        self.t += self.durations[min(self.calls, len(self.durations) - 1)]
        self.calls += 1


def test_warmup_untimed_then_budget_stops() -> None:
    clock = FakeClock([5.0, 1.0, 2.0, 3.0, 4.0, 5.0])
    t = time_callable(clock.work, warmup=1, budget_s=5.5, max_iters=100, clock=clock)
    # warm-up (5 s) not timed; 1+2+3 = 6 s > 5.5 s budget stops after the call that crossed it
    assert t.warmup_ms == [5000.0]
    assert t.times_ms == [1000.0, 2000.0, 3000.0]
    assert t.iters == 3 and t.stopped_by == "budget"
    assert t.median_ms == 2000.0
    assert t.p90_ms == pytest.approx(np.percentile([1000, 2000, 3000], 90))
    assert t.throughput == pytest.approx(0.5)  # 1 item per 2 s


def test_iteration_cap_and_min_iters() -> None:
    clock = FakeClock([0.001])
    t = time_callable(clock.work, warmup=0, budget_s=100.0, max_iters=7, items=4, clock=clock)
    assert t.iters == 7 and t.stopped_by == "max_iters" and clock.calls == 7
    assert t.throughput == pytest.approx(4 / 0.001)
    slow = FakeClock([10.0])
    t = time_callable(slow.work, warmup=0, budget_s=1.0, min_iters=3, max_iters=5, clock=slow)
    assert t.iters == 3  # the budget is spent after the first call, min_iters still holds


def test_sync_called_around_every_timed_call() -> None:
    events: list[str] = []
    t = time_callable(
        lambda: events.append("run"), warmup=1, budget_s=10, max_iters=2, sync=lambda: events.append("sync")
    )
    assert t.iters == 2
    assert events == ["sync", "run", "sync", "run", "sync", "run", "sync"]


def test_bad_settings_refused() -> None:
    with pytest.raises(ConfigError):
        time_callable(lambda: None, budget_s=0)
    with pytest.raises(ConfigError):
        time_callable(lambda: None, min_iters=3, max_iters=2)


def test_peak_rss_is_measured() -> None:
    t = time_callable(lambda: np.ones(4_000_000), warmup=0, budget_s=0.01, max_iters=1)
    assert t.peak_rss_mib is not None and t.peak_rss_mib >= 30  # the 32 MB array was resident at the peak
    assert t.rss_scope in ("cell", "process")
    assert peak_rss_mib() > 0
    assert t.cuda_max_allocated_mib is None


class HostEngine:
    device = "cpu"

    def __init__(self) -> None:
        self.seen: list[type] = []

    def __call__(self, feeds: dict) -> dict:
        self.seen.append(type(feeds["x"]))
        return {"y": feeds["x"] * 2}


def test_time_engine_cpu_feeds_host_arrays() -> None:
    eng = HostEngine()
    t = time_engine(
        eng, {"x": np.ones(3, np.float32)}, device_resident=True, warmup=1, budget_s=1, max_iters=2
    )
    assert t.iters == 2 and len(eng.seen) == 3
    assert set(eng.seen) == {np.ndarray}  # device_resident is ignored on CPU engines
