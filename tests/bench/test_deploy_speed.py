"""`zsplg-fast bench deploy`: variants timed in child processes without torch (round-robin in one process
for latency, alone for peak RSS), reported side by side. The real-size export and quantization are what
`bench/results/deploy_cpu_real` runs; here a small hand-made Conv net stands in for them (fast)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from zsplg_fast.bench.deploy_speed import DeployBenchConfig, time_in_child, time_interleaved


def _conv_net(path: Path, size: int = 16) -> Path:
    g = np.random.default_rng(0)
    w1 = helper.make_tensor("w1", TensorProto.FLOAT, [16, 3, 3, 3], g.standard_normal(432).tolist())
    w2 = helper.make_tensor("w2", TensorProto.FLOAT, [4, 16, 1, 1], g.standard_normal(64).tolist())
    nodes = [
        helper.make_node("Conv", ["image", "w1"], ["a"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["a"], ["r"]),
        helper.make_node("Conv", ["r", "w2"], ["logits"]),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, size, size])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 4, size, size])],
        [w1, w2],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def test_children_time_without_torch(tmp_path: Path) -> None:
    """What an edge box runs: the timing children import onnxruntime and numpy, never torch; the
    interleaved child runs every variant the same number of times."""
    a, b = _conv_net(tmp_path / "a.onnx"), _conv_net(tmp_path / "b.onnx")
    cfg = DeployBenchConfig(size=16, budget_s=0.05, max_iters=3)
    one = time_in_child(a, "all", cfg)
    assert one["torch_imported"] is False and one["peak_rss_mib"] > 0 and len(one["times_ms"]) >= 1
    both = time_interleaved({"fp32": a, "int8-cpu": b}, cfg)
    assert both["torch_imported"] is False
    assert len(both["times_ms"]["fp32"]) == len(both["times_ms"]["int8-cpu"]) >= 1


def test_bench_deploy_reports_every_variant(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The CLI end to end on variants already made in the work folder (``made.json``, as a rerun
    reuses them): latency, throughput, speed-up against fp32 and peak RSS per variant, JSON + markdown."""
    from zsplg_fast.cli.main import main
    from zsplg_fast.export.int8 import quantize_int8

    work = tmp_path / "w" / "tiny"
    work.mkdir(parents=True)
    fp32 = _conv_net(work / "segmenter.onnx")
    calib = [{"image": np.random.default_rng(1).standard_normal((1, 3, 16, 16)).astype(np.float32)}]
    rec = quantize_int8(
        fp32, work / "segmenter.int8-cpu.onnx", calib, op_types=("Conv", "Relu"), target="cpu"
    )
    from zsplg_fast.bench.deploy_speed import int8_recipe

    settings = {"size": 16, "num_classes": 21, "calib_images": 1, "int8": int8_recipe()}  # today's recipe
    made = {"parameters": 496, "export": {"parity": []}, "int8-cpu": rec.to_dict(), "settings": settings}
    (work / "made.json").write_text(json.dumps(made))
    out = tmp_path / "res"
    args = ["bench", "deploy", "--backbones", "tiny", "--variants", "int8-cpu", "--size", "16"]
    args += ["--calib-images", "1", "--rounds", "2", "--budget-s", "0.1", "--work", str(tmp_path / "w")]
    args += ["--out", str(out)]
    with pytest.raises(SystemExit) as done:
        main(args)
    assert not done.value.code, capsys.readouterr()
    report = json.loads((out / "bench_deploy.json").read_text())
    rows = report["backbones"]["tiny"]["results"]
    assert list(rows) == ["fp32", "int8-cpu"]  # fp32 always runs: the baseline
    for v, r in rows.items():
        assert r["error"] is None and r["runs"] >= 2, (v, r)  # >= 1 per round
        assert r["peak_rss_mib"] > 0 and r["throughput_img_s"] == pytest.approx(1000 / r["median_ms"])
    assert rows["fp32"]["speedup_vs_fp32"] == pytest.approx(1.0)
    assert report["backbones"]["tiny"]["made"]["int8-cpu"]["target"] == "cpu"
    assert report["machine"]["usable_cores"] >= 1 and "onnxruntime" in report["versions"]
    md = (out / "bench_deploy.md").read_text()
    assert "| int8-cpu |" in md and "peak RSS" in md and "SIMD flags" in md


def test_bench_deploy_refuses_unknown_names(capsys: pytest.CaptureFixture[str]) -> None:
    from zsplg_fast.cli.main import main

    for args in (["--backbones", "resnet999"], ["--variants", "int4"]):
        with pytest.raises(SystemExit) as done:
            main(["bench", "deploy", *args])
        assert done.value.code == 2
    assert "unknown" in capsys.readouterr().err
