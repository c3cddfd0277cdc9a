"""Every device of one machine: one worker process per device, over disjoint shards, into one folder.

``label.devices`` (``--devices``) names the devices:

- ``all``: every CUDA device of this machine;
- ``cuda:0,cuda:2``: these devices (a comma-separated list of torch devices);
- ``cpu:N``: N CPU workers, torch threads split between them (tests, CPU-only machines);
- ``N``: the first N CUDA devices, or N CPU workers on a machine without CUDA.

Worker k of D labels share ``i + k*n`` of ``n*D`` of the dataset when this machine itself runs
share ``i/n`` (``--shard``); that is exactly share k of D of the machine's share, so the workers'
files are those of ``D`` separate ``--shard`` runs: each shard resumes on its own, writes its own
``errors-<s>-of-<N>.jsonl`` and ``shards/<s>-of-<N>.json``, and a failed worker's shard is rerun
alone with ``zsplg-fast label --config <out>/shards/config.yaml --shard s/N --device DEV``.

Workers are separate processes (``spawn``: no CUDA state or threads copied from the parent), each
pinned to its device (``CUDA_VISIBLE_DEVICES`` = that one GPU) and given ``cpu_count // D`` torch
threads. They report progress through one queue, so the caller sees one progress bar and gets one
summary. The first worker to reach the output folder writes the manifest; the others wait on a lock
for it (two fresh workers would otherwise each see the other's files as foreign).
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import queue
import shlex
import time
import traceback
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from zsplg_fast.config import Config, to_dict
from zsplg_fast.data import Sample, shard
from zsplg_fast.errors import ConfigError
from zsplg_fast.labeling.job import JobSummary, ProgressFn
from zsplg_fast.labeling.outputs import is_done
from zsplg_fast.utils.io import atomic_write_json, atomic_write_text, remove_stale_temps

RunShard = Callable[..., JobSummary]  # label_dataset(cfg, on_progress=..., out_lock=..., error_count=...)

DEVICES_VALID = "all, cuda:0,cuda:1 (a list), cpu:N, N"
_POLL_S = 0.2


@dataclass(frozen=True)
class WorkerPlan:
    """Worker ``index``: its torch ``device``, its share ``shard`` = (s, N) and its torch ``threads``."""

    index: int
    device: str
    shard: tuple[int, int]
    threads: int


@dataclass
class DevicesSummary(JobSummary):
    """The workers' counts added up, plus one record per worker (device, shard, status, counts, and
    for a failed worker its error and the command that reruns its shard alone)."""

    workers: list[dict[str, Any]] = field(default_factory=list)

    @property
    def failed_workers(self) -> list[dict[str, Any]]:
        """Records of the workers that did not finish their shard."""
        return [w for w in self.workers if w["status"] != "done"]


def _cuda_count() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def parse_devices(spec: str, cuda_count: int | None = None) -> list[str]:
    """``label.devices`` → one torch device string per worker (see the module docstring).

    Raises:
        ConfigError: a malformed spec, a CUDA device this machine does not have, a repeated device.
    """
    n_cuda = _cuda_count() if cuda_count is None else cuda_count
    s = spec.strip().lower()
    if s == "all":
        if n_cuda == 0:
            raise ConfigError("label.devices", spec, "no CUDA device on this machine", valid="cpu:N")
        return [f"cuda:{k}" for k in range(n_cuda)]
    if s.isdigit() or (s.startswith("cpu:") and s[4:].isdigit()):
        n = int(s[4:] if s.startswith("cpu:") else s)
        if n < 1:
            raise ConfigError("label.devices", spec, "needs at least one worker", valid=DEVICES_VALID)
        if s.startswith("cpu:") or n_cuda == 0:
            return ["cpu"] * n
        if n > n_cuda:
            raise ConfigError("label.devices", spec, f"this machine has {n_cuda} CUDA devices", valid="all")
        return [f"cuda:{k}" for k in range(n)]
    devices = [d.strip() for d in s.split(",") if d.strip()]
    for d in devices:
        kind, _, idx = d.partition(":")
        if kind != "cuda" or not idx.isdigit():
            raise ConfigError("label.devices", spec, f"'{d}' is not cuda:K", valid=DEVICES_VALID)
        if int(idx) >= n_cuda:
            raise ConfigError("label.devices", spec, f"this machine has {n_cuda} CUDA devices", valid="all")
    if not devices or len(set(devices)) != len(devices):
        raise ConfigError("label.devices", spec, "empty, or a device named twice", valid=DEVICES_VALID)
    return devices


def plan_workers(
    devices: list[str], shard: tuple[int, int], cpu_count: int | None = None
) -> list[WorkerPlan]:
    """Worker k of D on ``devices[k]`` labels share ``i + k*n`` of ``n*D`` (= share k of D of i/n)."""
    i, n = shard
    d = len(devices)
    threads = max(1, (cpu_count or os.cpu_count() or 1) // d)
    return [WorkerPlan(k, dev, (i + k * n, n * d), threads) for k, dev in enumerate(devices)]


def worker_config(cfg: Config, plan: WorkerPlan) -> Config:
    """The config one worker runs: its device and shard, no devices, no overlays (the parent draws)."""
    label = replace(
        cfg.label, device=plan.device, shard=f"{plan.shard[0]}/{plan.shard[1]}", devices=None, overlays=0
    )
    return replace(cfg, label=label)


def rerun_command(out: Path, plan: WorkerPlan) -> str:
    """The command that relabels ``plan``'s shard alone, resuming where the worker stopped."""
    s, n = plan.shard
    cfg_path = shlex.quote(str(out / "shards" / "config.yaml"))
    return f"zsplg-fast label --config {cfg_path} --shard {s}/{n} --device {plan.device}"


@contextmanager
def _pinned_env(device: str) -> Any:
    """``CUDA_VISIBLE_DEVICES`` set to the worker's GPU while it is spawned (the child copies the env)."""
    old = os.environ.get("CUDA_VISIBLE_DEVICES")
    if device.startswith("cuda:"):
        visible = old.split(",") if old else None
        k = int(device.split(":")[1])
        os.environ["CUDA_VISIBLE_DEVICES"] = visible[k] if visible else str(k)
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("CUDA_VISIBLE_DEVICES", None)
        else:
            os.environ["CUDA_VISIBLE_DEVICES"] = old


def _same_labeling(out: Path, cfg: Config) -> bool:
    """True when ``out``'s manifest was written with this config's labeling settings (the fingerprint's
    inputs except the weights' hashes), so its finished shards need no worker; otherwise a worker
    starts and the manifest check itself accepts or refuses the folder."""
    try:
        old = json.loads((out / "manifest.json").read_text())["config"]
    except (OSError, ValueError, KeyError, TypeError):
        return False
    new = to_dict(cfg)
    same = all(old.get(k) == new[k] for k in ("sam", "clip", "amg", "classify"))
    return same and all(old["label"].get(k) == new["label"][k] for k in ("masks", "precision"))


def _worker(
    cfg: Config, plan: WorkerPlan, events: Any, out_lock: Any, run_shard: RunShard, error_count: Any = None
) -> None:
    """Child process body: label ``plan``'s shard with ``run_shard`` (``labeling.run.label_dataset``,
    passed in by the caller so this module never imports ``run``); every outcome goes to ``events``,
    never raised; a failed shard (a sticky CUDA error included) also exits the process with code 1."""
    import torch

    torch.set_num_threads(plan.threads)
    if plan.device.startswith("cuda"):  # CUDA_VISIBLE_DEVICES leaves this worker one GPU
        cfg = replace(cfg, label=replace(cfg.label, device="cuda:0"))
        torch.cuda.set_device(0)

    def progress(done: int, total: int, sample_id: str) -> None:
        events.put(("progress", plan.index, done, total, sample_id))

    try:
        summary = run_shard(cfg, on_progress=progress, out_lock=out_lock, error_count=error_count)
        events.put(("done", plan.index, summary.to_dict()))
    except BaseException as e:  # reported to the parent with the worker's shard
        events.put(("failed", plan.index, type(e).__name__, str(e), traceback.format_exc()))
        events.close()
        events.join_thread()  # the report is in the pipe before the process ends
        raise SystemExit(1) from None


def label_on_devices(
    cfg: Config,
    samples: Sequence[Sample],
    on_progress: ProgressFn | None = None,
    *,
    run_shard: RunShard,
) -> DevicesSummary:
    """Run one worker per device of ``cfg.label.devices`` over disjoint shards of ``samples``.

    ``run_shard`` is what each worker runs on its shard: ``labeling.run.label_dataset`` (a module-level
    function, so the spawned child can unpickle it); the caller passes it, so ``devices`` does not
    import ``run`` (``run`` imports ``devices``: no cycle).

    ``samples`` is this machine's share (``cfg.label.shard``); ``cfg`` must already be resolved
    (``classify.classes`` a file, not ``auto``). A shard whose images are all done is not started
    (no models loaded). ``label.max_errors`` counts the failures of all workers together: past it every
    worker stops. Returns the summed counts and one record per worker; a worker that fails (any
    error, a crash, a sticky CUDA error on its GPU) does not stop the others: its record holds the
    error and the command that reruns its shard alone. Also writes ``<out>/shards/config.yaml`` (what
    that command reads) and ``<out>/shards/devices.json``.
    """
    if cfg.label.executor != "local":
        raise ConfigError("label.devices", cfg.label.devices, "is for the local executor; Ray places its own")
    t0 = time.perf_counter()
    out = Path(cfg.label.out)
    devices = parse_devices(cfg.label.devices or "")[: max(1, len(samples))]  # no worker without images
    plans = plan_workers(devices, cfg.label.shard_index)
    if out.is_dir():  # a killed run's temp files, once, before any worker writes (workers never remove them)
        remove_stale_temps(out)
    ctx = mp.get_context("spawn")
    events = ctx.Queue()
    out_lock = ctx.Lock()
    error_count = ctx.Value("i", 0)  # label.max_errors counts the failures of all workers together
    procs = {}
    results: dict[int, tuple[str, dict[str, Any]]] = {}
    progress: dict[int, tuple[int, int]] = {}  # worker → (done, total)
    d = len(plans)
    for plan in plans:
        mine = shard(samples, plan.index, d)
        if _same_labeling(out, cfg) and all(is_done(out, s.id) for s in mine):
            n = len(mine)
            results[plan.index] = ("done", JobSummary(total=n, skipped=n).to_dict())
            progress[plan.index] = (n, n)
            continue
        with _pinned_env(plan.device):
            p = ctx.Process(
                target=_worker,
                args=(worker_config(cfg, plan), plan, events, out_lock, run_shard, error_count),
                name=f"label-{plan.device}-{plan.index}",
                daemon=True,
            )
            p.start()
        procs[plan.index] = p

    def handle(msg: tuple[Any, ...]) -> None:
        kind, k = msg[0], msg[1]
        if kind == "progress":
            progress[k] = (msg[2], msg[3])
            if on_progress:
                done = sum(d for d, _ in progress.values())
                on_progress(done, sum(t for _, t in progress.values()), msg[4])
        elif kind == "done":
            results[k] = ("done", msg[2])
        else:
            results[k] = ("failed", {"error": msg[2], "message": msg[3], "traceback": msg[4]})

    try:
        while len(results) < len(plans):
            try:
                handle(events.get(timeout=_POLL_S))
                continue
            except queue.Empty:
                pass
            dead = [k for k, p in procs.items() if k not in results and not p.is_alive()]
            while True:  # a dead worker's last messages are already in the pipe
                try:
                    handle(events.get_nowait())
                except queue.Empty:
                    break
            for k in dead:
                if k not in results:
                    code = procs[k].exitcode
                    why = {"error": "WorkerDied", "message": f"exited with code {code}", "traceback": ""}
                    results[k] = ("failed", why)
    finally:
        for p in procs.values():
            p.join(timeout=10)
            if p.is_alive():
                p.terminate()
    return _summarize(cfg, out, plans, results, time.perf_counter() - t0)


def _summarize(
    cfg: Config,
    out: Path,
    plans: list[WorkerPlan],
    results: dict[int, tuple[str, dict[str, Any]]],
    seconds: float,
) -> DevicesSummary:
    summary = DevicesSummary(errors_path=str(out / "errors-*.jsonl"))
    claimed = (out / "manifest.json").is_file()
    for plan in plans:
        status, info = results[plan.index]
        record: dict[str, Any] = {
            "worker": plan.index,
            "device": plan.device,
            "shard": f"{plan.shard[0]}/{plan.shard[1]}",
            "threads": plan.threads,
            "status": status,
        }
        if status == "done":
            for k in ("total", "skipped", "labeled", "failed"):
                setattr(summary, k, getattr(summary, k) + int(info[k]))
                record[k] = info[k]
            for k, v in info.get("timings_s", {}).items():
                summary.timings_s[k] = round(summary.timings_s.get(k, 0.0) + v, 3)
            for k, v in info.get("load_stats", {}).items():
                summary.load_stats[k] = summary.load_stats.get(k, 0) + v
        else:
            record.update(info)
            record["rerun"] = (
                rerun_command(out, plan)
                if claimed
                else f"the same command again (no worker got as far as claiming {out})"
            )
        summary.workers.append(record)
    summary.seconds = round(seconds, 3)
    if claimed:  # the folder is ours: record how to rerun a shard
        rerun_cfg = replace(cfg, label=replace(cfg.label, devices=None, overlays=0))
        atomic_write_text(out / "shards" / "config.yaml", yaml.safe_dump(to_dict(rerun_cfg), sort_keys=False))
        atomic_write_json(out / "shards" / "devices.json", summary.to_dict())
    return summary
