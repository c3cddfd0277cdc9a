"""`zsplg-fast bench deploy`: every variant made, timed in a child process without torch, reported."""

from __future__ import annotations

import json
from pathlib import Path

import pytest


def test_bench_deploy_times_every_variant_without_torch(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from zsplg_fast.cli.main import main

    out = tmp_path / "res"
    args = [
        "bench",
        "deploy",
        "--backbones",
        "tiny",
        "--size",
        "65",
        "--calib-images",
        "1",
        "--variants",
        "int8,int8-cpu",
    ]
    args += ["--rounds", "1", "--budget-s", "0.2", "--work", str(tmp_path / "w"), "--out", str(out)]
    with pytest.raises(SystemExit) as done:
        main(args)
    assert not done.value.code, capsys.readouterr()
    report = json.loads((out / "bench_deploy.json").read_text())
    rows = report["backbones"]["tiny"]["results"]
    assert list(rows) == ["fp32", "int8", "int8-cpu"]  # fp32 always (the baseline)
    for v, r in rows.items():
        assert r["runs"] >= 1 and r["error"] is None, (v, r)
        assert r["peak_rss_mib"] > 0 and r["throughput_img_s"] > 0
    assert rows["fp32"]["speedup_vs_fp32"] == pytest.approx(1.0)
    made = report["backbones"]["tiny"]["made"]
    assert made["int8"]["target"] == "tensorrt" and made["int8-cpu"]["target"] == "cpu"
    assert made["int8"]["calibration_batches"] == 1 and made["export"]["parity"]
    md = (out / "bench_deploy.md").read_text()
    assert "| int8-cpu |" in md and "peak RSS" in md


def test_timing_child_does_not_import_torch(tmp_path: Path) -> None:
    """What an edge box runs: the timing child imports onnxruntime and numpy, never torch."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper

    from zsplg_fast.bench.deploy_speed import DeployBenchConfig, time_in_child

    w = helper.make_tensor("w", TensorProto.FLOAT, [2, 3, 1, 1], np.ones(6, np.float32).tolist())
    node = helper.make_node("Conv", ["image", "w"], ["y"])
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2, 8, 8])],
        [w],
    )
    path = tmp_path / "m.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    got = time_in_child(path, "all", DeployBenchConfig(size=8, budget_s=0.05, max_iters=3))
    assert got["torch_imported"] is False and len(got["times_ms"]) >= 1
