"""`label --devices`: one worker process per device over disjoint shards, into one folder.

Two CPU workers (spawned processes) with the shipped toy SAM and CLIP label the same pixels and write the
same meta (timings aside) as one in-process job; a failed worker is reported with its shard, and the
printed command reruns that shard alone."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from zsplg_fast.config import load_config
from zsplg_fast.data import read_label, shard
from zsplg_fast.data.synthetic import make_toy_world
from zsplg_fast.errors import ConfigError
from zsplg_fast.labeling.devices import parse_devices, plan_workers
from zsplg_fast.labeling.run import label_dataset

TOY_CI = Path(__file__).parents[2] / "zsplg_fast" / "configs" / "toy_ci.yaml"


def test_device_specs() -> None:
    assert parse_devices("cpu:2", cuda_count=4) == ["cpu", "cpu"]
    assert parse_devices("2", cuda_count=0) == ["cpu", "cpu"]
    assert parse_devices("2", cuda_count=4) == ["cuda:0", "cuda:1"]
    assert parse_devices("all", cuda_count=3) == ["cuda:0", "cuda:1", "cuda:2"]
    assert parse_devices("cuda:2, cuda:0", cuda_count=3) == ["cuda:2", "cuda:0"]
    for bad, n_cuda, why in [
        ("all", 0, "no CUDA device"),
        ("cuda:0,cuda:0", 2, "named twice"),
        ("cuda:2", 2, "has 2 CUDA devices"),
        ("3", 2, "has 2 CUDA devices"),
        ("cpu:0", 0, "at least one"),
        ("gpu0", 1, "not cuda:K"),
    ]:
        with pytest.raises(ConfigError, match=why):
            parse_devices(bad, cuda_count=n_cuda)


def test_devices_refuse_the_ray_executor() -> None:
    from zsplg_fast.labeling.devices import label_on_devices

    cfg = load_config(None, {"label.devices": "cpu:2", "label.executor": "ray"})
    with pytest.raises(ConfigError, match="local executor"):
        label_on_devices(cfg, [], run_shard=lambda *a, **k: None)


def test_worker_shards_split_the_machine_share() -> None:
    items = list(range(23))
    for i, n, d in [(0, 1, 2), (1, 3, 2), (2, 3, 4)]:
        plans = plan_workers(["cpu"] * d, (i, n), cpu_count=8)
        parts = [shard(items, *p.shard) for p in plans]
        assert sorted(x for p in parts for x in p) == shard(items, i, n)  # disjoint, covering
        assert all(p.threads == 8 // d for p in plans)


def _meta(out: Path, sid: str) -> dict:
    meta = json.loads((out / "meta" / f"{sid}.json").read_text())
    meta.pop("timings_s")
    return meta


def test_two_cpu_workers_match_one_and_a_failed_shard_reruns_alone(tmp_path: Path) -> None:
    data = tmp_path / "world"
    make_toy_world(data, "ci")
    split = tmp_path / "four.txt"
    split.write_text("".join((data / "splits" / "unlabeled.txt").read_text().splitlines(True)[:4]))

    def cfg(out: Path, **extra: object):
        base = {"data.source": f"synthetic:{data}", "data.split": str(split), "label.out": str(out)}
        return load_config(TOY_CI, {**base, "label.io_workers": 0, **extra})

    one = label_dataset(cfg(tmp_path / "one"))
    assert (one.labeled, one.failed) == (4, 0)
    ref_ids = sorted(p.stem for p in (tmp_path / "one" / "labels").glob("*.png"))

    # break the 2nd image (worker 1's first): with max_errors=0 that worker stops; max_errors counts
    # both workers' failures together, so worker 0 stops too unless it finished first
    victim = next((data / "JPEGImages").glob(f"{ref_ids[1]}*"))
    good = victim.read_bytes()
    victim.write_bytes(b"not a jpeg")
    out = tmp_path / "two"
    seen: list[tuple[int, int]] = []
    two = label_dataset(
        cfg(out, **{"label.devices": "cpu:2", "label.max_errors": 0}),
        on_progress=lambda done, total, _sid: seen.append((done, total)),
    )
    victim.write_bytes(good)
    w0, w1 = two.workers
    assert w1["status"] == "failed", two.workers
    assert w1["shard"] == "1/2" and w1["error"] == "JobAbortedError" and "max_errors=0" in w1["message"]
    assert "--shard 1/2 --device cpu" in w1["rerun"]
    assert w0["shard"] == "0/2" and w0["threads"] >= 1
    if w0["status"] == "done":
        assert w0["labeled"] == 2
    else:
        assert "1 images failed (max_errors=0)" in w0["message"], w0
    assert seen[-1][1] == 4  # one bar over both shards
    errors = [json.loads(x) for x in (out / "errors-1-of-2.jsonl").read_text().splitlines()]
    assert [e["id"] for e in errors] == [ref_ids[1]]
    assert ref_ids[1] not in {p.stem for p in (out / "labels").glob("*.png")}

    # the printed command relabels a failed shard alone, resuming in the same folder
    for w in two.failed_workers:
        res = CliRunner().invoke(_app(), shlex.split(w["rerun"])[1:])
        assert res.exit_code == 0, res.output
    shard_status = json.loads((out / "shards" / "1-of-2.json").read_text())
    assert (shard_status["labeled"], shard_status["failed"]) == (2, 0)

    for sid in ref_ids:
        a = read_label(tmp_path / "one" / "labels" / f"{sid}.png")
        b = read_label(out / "labels" / f"{sid}.png")
        np.testing.assert_array_equal(a, b)
        assert _meta(tmp_path / "one", sid) == _meta(out, sid)
    again = label_dataset(cfg(out, **{"label.devices": "cpu:2"}))
    assert (again.total, again.skipped, again.labeled, again.failed) == (4, 4, 0, 0)
    assert json.loads((out / "shards" / "devices.json").read_text())["skipped"] == 4


def _app():
    from zsplg_fast.cli.main import app

    return app


def test_gpu_workers_are_pinned_through_cuda_visible_devices(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    from zsplg_fast.labeling.devices import _pinned_env

    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    with _pinned_env("cuda:1"):
        assert os.environ["CUDA_VISIBLE_DEVICES"] == "1"
    assert "CUDA_VISIBLE_DEVICES" not in os.environ
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")  # the parent's own mask: cuda:1 is GPU 5
    with _pinned_env("cuda:1"):
        assert os.environ["CUDA_VISIBLE_DEVICES"] == "5"
    with _pinned_env("cpu"):
        assert os.environ["CUDA_VISIBLE_DEVICES"] == "3,5"
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "3,5"


def test_cli_reports_a_failed_worker_with_its_rerun_command(
    monkeypatch: pytest.MonkeyPatch, tmp_path
) -> None:
    from zsplg_fast.labeling import run
    from zsplg_fast.labeling.devices import DevicesSummary, WorkerPlan, rerun_command

    plan = WorkerPlan(1, "cuda:1", (1, 2), 8)
    failed = {
        "worker": 1,
        "device": "cuda:1",
        "shard": "1/2",
        "status": "failed",
        "error": "OutOfMemoryError",
    }
    failed |= {"message": "CUDA out of memory [1]", "rerun": rerun_command(tmp_path, plan)}
    done = {"worker": 0, "device": "cuda:0", "shard": "0/2", "status": "done"}
    summary = DevicesSummary(total=3, labeled=3, workers=[done, failed])
    monkeypatch.setattr(run, "label_dataset", lambda cfg, on_progress=None: summary)
    res = CliRunner().invoke(
        _app(), ["label", "--data", "folder:x", "--devices", "2", "--out", str(tmp_path)]
    )
    assert res.exit_code == 1
    text = " ".join(res.output.split())
    assert (
        "worker 1 (cuda:1, shard 1/2) failed: OutOfMemoryError" in text and "CUDA out of memory [1]" in text
    )
    rerun = f"rerun its shard alone: zsplg-fast label --config {tmp_path}/shards/config.yaml --shard 1/2"
    assert rerun + " --device cuda:1\n" in res.output  # one unbroken line, ready to copy
