"""Static QDQ INT8 of a small conv net ending in Resize (the segmenter's shape), and the QDQ lint.

(fp16/bf16 mixed precision and ``precision_artifact``: test_precision_mixed.py.)"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from zsplg_fast.errors import ConfigError, ExportFailedError, QdqLintError
from zsplg_fast.export.precision import lint_qdq, qdq_problems, quantize_int8


class Net(nn.Module):
    """conv → relu → conv (+ residual add) → bilinear resize back to the input size."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(3, 8, 3, 2, 1)
        self.b = nn.Conv2d(8, 8, 3, 1, 1)
        self.c = nn.Conv2d(8, 4, 1)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.a(image))
        x = x + self.b(x)
        return F.interpolate(self.c(x), image.shape[-2:], mode="bilinear", align_corners=True)


@pytest.fixture(scope="module")
def fp32(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("prec") / "net.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            Net().eval(),
            (torch.randn(1, 3, 32, 32),),
            str(path),
            input_names=["image"],
            output_names=["logits"],
            dynamic_axes={"image": {0: "b", 2: "h", 3: "w"}, "logits": {0: "b", 2: "h", 3: "w"}},
            opset_version=17,
            dynamo=False,
        )
    return path


def _run(path: Path, x: np.ndarray) -> np.ndarray:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"image": x})[0]


def _cos(a: np.ndarray, b: np.ndarray) -> float:
    return float((a * b).sum() / (np.linalg.norm(a) * np.linalg.norm(b)))


def test_int8_qdq_restricted_to_conv_and_close(fp32: Path, tmp_path: Path) -> None:
    g = np.random.default_rng(0)
    calib = [{"image": g.standard_normal((1, 3, 32, 48)).astype(np.float32)} for _ in range(4)]
    report = quantize_int8(fp32, tmp_path / "int8.onnx", calib)
    assert report.calibration_batches == 4 and report.per_channel and report.qdq_nodes > 0
    assert report.pre_process in ("symbolic", "skip_symbolic_shape")
    # only Conv/MatMul/Gemm are quantized: fewer Q/DQ pairs than onnxruntime's default op list (which
    # also quantizes the residual Add and Resize inputs, what costs accuracy per the shared notes)
    everything = quantize_int8(fp32, tmp_path / "all.onnx", calib, op_types=[])
    assert report.qdq_nodes < everything.qdq_nodes
    ops = {n.op_type for n in onnx.load(str(tmp_path / "int8.onnx")).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear", "Conv"} <= ops
    x = g.standard_normal((2, 3, 40, 56)).astype(np.float32)
    ref, got = _run(fp32, x), _run(tmp_path / "int8.onnx", x)
    assert got.shape == ref.shape and _cos(ref, got) > 0.99


def test_int8_without_calibration_data_fails(fp32: Path, tmp_path: Path) -> None:
    with pytest.raises(ExportFailedError):
        quantize_int8(fp32, tmp_path / "x.onnx", [])
    assert not (tmp_path / "x.onnx").exists()
    with pytest.raises(ConfigError):
        quantize_int8(fp32, tmp_path / "x.onnx", [], calibrate_method="median")


def _int32_dq(path: Path) -> list[str]:
    model = onnx.load(str(path))
    ints = {i.name for i in model.graph.initializer if i.data_type == onnx.TensorProto.INT32}
    return [n.name for n in model.graph.node if n.op_type == "DequantizeLinear" and n.input[0] in ints]


def test_int8_output_has_float_biases_and_passes_the_lint(fp32: Path, tmp_path: Path) -> None:
    g = np.random.default_rng(2)
    calib = [{"image": g.standard_normal((1, 3, 32, 32)).astype(np.float32)} for _ in range(2)]
    report = quantize_int8(fp32, tmp_path / "int8.onnx", calib)
    assert report.quantize_bias is False and _int32_dq(tmp_path / "int8.onnx") == []
    lint_qdq(tmp_path / "int8.onnx")  # raises on any problem
    # the Conv biases are float initializers fed straight to the Conv nodes
    model = onnx.load(str(tmp_path / "int8.onnx"))
    floats = {i.name for i in model.graph.initializer if i.data_type == onnx.TensorProto.FLOAT}
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    assert len(convs) == 3 and all(len(n.input) == 3 and n.input[2] in floats for n in convs)


def test_lint_refuses_onnxruntime_default_int32_biases(fp32: Path, tmp_path: Path) -> None:
    calib = [{"image": np.random.default_rng(3).standard_normal((1, 3, 32, 32)).astype(np.float32)}]
    # onnxruntime's default (QuantizeBias on) is what TensorRT rejects: the lint names every such node
    bad = tmp_path / "bad.onnx"
    quantize_int8(fp32, bad, calib, quantize_bias=True, lint=False)
    offending = _int32_dq(bad)
    assert len(offending) == 3
    with pytest.raises(QdqLintError) as e:
        lint_qdq(bad)
    msg = str(e.value)
    assert "bad.onnx" in msg and "3 node(s) TensorRT cannot consume" in msg and "INT32" in msg
    assert all(name in msg for name in offending)
    assert {n for n, _ in e.value.problems} == set(offending)
    # refused at quantization time: nothing is written
    with pytest.raises(QdqLintError):
        quantize_int8(fp32, tmp_path / "refused.onnx", calib, quantize_bias=True)
    assert not (tmp_path / "refused.onnx").exists()


def test_lint_rules_on_a_hand_made_graph() -> None:
    """uint8 Q (no zero point), a scale computed at run time, a non-zero int8 zero point, a zero scale."""
    from onnx import TensorProto, helper

    f = TensorProto.FLOAT
    inits = [
        helper.make_tensor("s", f, [], [0.1]),
        helper.make_tensor("zp_bad", TensorProto.INT8, [], [3]),
        helper.make_tensor("zp_ok", TensorProto.INT8, [], [0]),
        helper.make_tensor("s0", f, [], [0.0]),
    ]
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "s"], ["q_u8"], name="q_uint8"),
        helper.make_node("DequantizeLinear", ["q_u8", "s"], ["d_u8"], name="dq_uint8"),
        helper.make_node("Abs", ["x"], ["dyn"], name="abs"),
        helper.make_node("QuantizeLinear", ["x", "dyn", "zp_ok"], ["q_dyn"], name="q_dynamic_scale"),
        helper.make_node("QuantizeLinear", ["x", "s", "zp_bad"], ["q_zp"], name="q_zero_point"),
        helper.make_node("QuantizeLinear", ["x", "s0", "zp_ok"], ["q_s0"], name="q_zero_scale"),
        helper.make_node("QuantizeLinear", ["x", "s", "zp_ok"], ["q_ok"], name="q_fine"),
        helper.make_node("DequantizeLinear", ["q_ok", "s", "zp_ok"], ["y"], name="dq_fine"),
    ]
    outs = [helper.make_tensor_value_info(n, f, [4]) for n in ("d_u8", "y")]
    outs += [helper.make_tensor_value_info(n, TensorProto.INT8, [4]) for n in ("q_dyn", "q_zp", "q_s0")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", f, [4])], outs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)])
    found = qdq_problems(model)
    by_node: dict[str, list[str]] = {}
    for node, why in found:
        by_node.setdefault(node, []).append(why)
    assert set(by_node) == {"q_uint8", "dq_uint8", "q_dynamic_scale", "q_zero_point", "q_zero_scale"}
    assert "UINT8" in by_node["q_uint8"][0] and "UINT8" in by_node["dq_uint8"][0]
    assert "not a constant" in by_node["q_dynamic_scale"][0]
    assert "zero point is not 0" in by_node["q_zero_point"][0]
    assert "non-positive" in by_node["q_zero_scale"][0]


def test_int8_pre_process_runs_with_relative_paths(
    fp32: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """quant_pre_process runs in the output folder; relative paths resolved after that chdir pointed
    nowhere, and quantization went on silently without pre-processing (``pre_process: failed``)."""
    import shutil

    shutil.copy(fp32, tmp_path / "net.onnx")
    (tmp_path / "out").mkdir()
    monkeypatch.chdir(tmp_path)
    g = np.random.default_rng(0)
    calib = [{"image": g.standard_normal((1, 3, 32, 48)).astype(np.float32)} for _ in range(2)]
    report = quantize_int8(Path("net.onnx"), Path("out") / "int8.onnx", calib)
    assert report.pre_process in ("symbolic", "skip_symbolic_shape"), report.pre_process
