"""deploy: INT8 (static QDQ) and fp16 folders with measured mIoU and latency; drop check; no half-writes."""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import onnx
import pytest

from zsplg_fast.deploy import deploy
from zsplg_fast.errors import AccuracyDropError, ConfigError, OutputExistsError


def test_int8_folder_and_measurements(int8_deploy: tuple[Path, dict]) -> None:
    out, result = int8_deploy
    files = [
        ".zsplg-fast.json",
        "README.md",
        "build_tensorrt.sh",
        "model.int8.json",
        "model.json",
        "model.onnx",
    ]
    files.append("triton")
    assert sorted(p.name for p in out.iterdir()) == files  # the marker says the folder is ours
    side = json.loads((out / "model.json").read_text())
    assert side["precision"] == "int8"
    assert side["class_names"] == ["background", "circle", "square", "triangle"]
    assert len(side["palette"]) == 4 and side["preprocessing"]["mean"] == [0.485, 0.456, 0.406]
    m, lat = side["deploy"]["miou"], side["deploy"]["latency"]
    assert m == {**m, "images": 12, "mode": "original"}
    assert 0.2 < m["reference"] <= 1.0  # the segmenter learned something in 100 iterations
    assert m["drop_points"] == pytest.approx(100 * (m["reference"] - m["deployed"]))
    assert abs(m["drop_points"]) < 5.0
    assert lat["fp32_ort_ms"] > 0 and lat["deployed_ort_ms"] > 0
    assert lat["speedup_vs_fp32_ort"] == pytest.approx(lat["fp32_ort_ms"] / lat["deployed_ort_ms"])
    q = side["deploy"]["quantization"]
    assert q["per_channel"] and q["calibration"]["images"] == 12 and q["target"] == "tensorrt"
    assert q["op_types"] == ["Conv", "MatMul", "Gemm"]  # the segmenter's TensorRT-form op list
    model = onnx.load(str(out / "model.onnx"))
    ops = {n.op_type for n in model.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops and q["qdq_nodes"] > 0
    assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert result["miou"]["deployed"] == m["deployed"]
    readme = (out / "README.md").read_text()
    assert "trtexec --onnx=model.onnx --stronglyTyped" in readme and "--saveEngine=" in readme
    assert "--int8" not in readme and "--fp16" not in readme  # the precision is in the graph
    assert "zsplg-fast infer" in readme


def test_drop_check_fires_and_leaves_nothing(
    int8_deploy: tuple[Path, dict], deploy_config: Callable[..., Any], tmp_path: Path
) -> None:
    _, result = int8_deploy
    limit = min(result["miou"]["drop_points"] - 0.01, -0.01)  # below the measured drop (and below 0)
    out = tmp_path / "refused"
    with pytest.raises(AccuracyDropError) as err, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        deploy(deploy_config(out, max_miou_drop=limit))
    assert err.value.limit == limit and err.value.drop > limit
    assert "nothing was written" in str(err.value)
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []  # no temp folder left beside it


def test_existing_folder_refused_without_force(
    int8_deploy: tuple[Path, dict], deploy_config: Callable[..., Any]
) -> None:
    out, _ = int8_deploy
    before = (out / "model.onnx").read_bytes()
    with pytest.raises(OutputExistsError):
        deploy(deploy_config(out))
    assert (out / "model.onnx").read_bytes() == before


def test_int8_needs_calibration_data(deploy_config: Callable[..., Any], tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        deploy(deploy_config(tmp_path / "x", calib=None))


def test_cli_deploy_fp16_keeps_fp32_io_and_accuracy(
    trained_ckpt: Path, shapes_ds: Path, tmp_path: Path
) -> None:
    from typer.testing import CliRunner

    from zsplg_fast.cli.main import app

    out = tmp_path / "cli-fp16"
    ds = f"synthetic:{shapes_ds}"
    args = [
        "deploy",
        "--checkpoint",
        str(trained_ckpt),
        "--precision",
        "fp16",
        "--val",
        ds,
        "--max-miou-drop",
        "0.5",
    ]
    args += ["--latency-size", "64", "--threads", "1", "--out", str(out), "--set", "deploy.exporter=legacy"]
    args += ["--set", "deploy.latency_budget_s=0.1"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "mIoU drop" in result.output
    side = json.loads((out / "model.json").read_text())
    assert side["precision"] == "fp16" and side["deploy"]["miou"]["images"] == 12
    assert abs(side["deploy"]["miou"]["drop_points"]) <= 0.5
    assert side["deploy"]["conversion"]["keep_io_types"]
    model = onnx.load(str(out / "model.onnx"))
    assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert model.graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert any(t.data_type == onnx.TensorProto.FLOAT16 for t in model.graph.initializer)
    readme = (out / "README.md").read_text()
    assert "trtexec --onnx=model.onnx --stronglyTyped" in readme and "--fp16" not in readme
    assert "zsplg-fast build model.onnx --precision fp16" in readme


def test_val_must_be_labeled(deploy_config: Callable[..., Any], shapes_ds: Path, tmp_path: Path) -> None:
    from zsplg_fast.errors import DatasetError

    with pytest.raises(DatasetError):
        deploy(deploy_config(tmp_path / "x", val=f"folder:{shapes_ds / 'JPEGImages'}", val_split=None))
    assert not (tmp_path / "x").exists()
