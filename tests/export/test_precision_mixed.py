"""Mixed fp16/bf16 ONNX (ModelOpt AutoCast) and ``precision_artifact`` on a tiny attention block.

The block has what the real artifacts have: Linear (MatMul/Gemm), a fused LayerNorm, a decomposed norm
(ReduceMean / Pow / Sqrt, like SAM's LayerNorm2d) and a Softmax.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from torch import nn

from zsplg_fast.errors import ConfigError, OutputExistsError
from zsplg_fast.export.artifact import sidecar_path
from zsplg_fast.export.tensors import TensorSpec

pytest.importorskip("modelopt.onnx.autocast", reason="fp16/bf16 ONNX needs zsplg-fast[precision]")

from zsplg_fast.export.precision import (
    FP32_OPS,
    convert_fp16,
    precision_artifact,
    precision_of,
    precision_path,
)

FP16_TOLERANCE = {"cosine": 0.9999, "max_abs": 2e-2}  # vs fp32, outputs of magnitude ~1-5


class Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.inp = nn.Linear(16, 32)
        self.norm = nn.LayerNorm(32)
        self.qkv = nn.Linear(32, 96)
        self.out = nn.Linear(32, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm(self.inp(x))
        q, k, v = self.qkv(h).chunk(3, dim=-1)
        a = torch.softmax(q @ k.transpose(-1, -2) / 32**0.5, dim=-1) @ v
        u = a.mean(-1, keepdim=True)  # decomposed norm, as SAM's LayerNorm2d
        a = (a - u) / torch.sqrt((a - u).pow(2).mean(-1, keepdim=True) + 1e-6)
        return self.out(a + h)


@pytest.fixture(scope="module")
def fp32(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``block.onnx`` + a sidecar as export_onnx writes it (the fields precision_artifact reads)."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("mixed") / "block.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            Block().eval(),
            (torch.randn(2, 10, 16),),
            str(path),
            input_names=["x"],
            output_names=["y"],
            dynamic_axes={"x": {0: "batch", 1: "tokens"}, "y": {0: "batch", 1: "tokens"}},
            opset_version=17,
            dynamo=False,
        )
    side = {
        "kind": "onnx",
        "name": "block",
        "file": path.name,
        "inputs": [TensorSpec("x", "float32", ("batch", "tokens", 16)).to_dict()],
        "outputs": [TensorSpec("y", "float32", ("batch", "tokens", 8)).to_dict()],
        "profiles": {"batch": [1, 2, 4], "tokens": [1, 12, 64]},
        "source": {"weights": "random-init"},
    }  # no "precision": read as fp32, as for exports made before the field existed
    sidecar_path(path).write_text(json.dumps(side))
    return path


def _types(path: Path) -> tuple[dict[str, int], list[onnx.NodeProto]]:
    g = onnx.shape_inference.infer_shapes(onnx.load(str(path))).graph
    types = {v.name: v.type.tensor_type.elem_type for v in [*g.value_info, *g.input, *g.output]}
    types.update({i.name: i.data_type for i in g.initializer})
    return types, list(g.node)


def _check_mixed(path: Path, low: int) -> None:
    """fp32 I/O; LayerNorm and the decomposed norm fp32; the matmuls and the Softmax in ``low`` (issue
    20, item 14: Softmax in the graph's precision, for TensorRT's attention fusion)."""
    types, nodes = _types(path)
    model = onnx.load(str(path))
    f32 = onnx.TensorProto.FLOAT
    assert [i.type.tensor_type.elem_type for i in [*model.graph.input, *model.graph.output]] == [f32, f32]
    assert "Softmax" not in FP32_OPS
    softmax = [n for n in nodes if n.op_type == "Softmax"]
    assert softmax and all(types[n.input[0]] == types[n.output[0]] == low for n in softmax)
    kept = [n for n in nodes if n.op_type in FP32_OPS]
    assert {n.op_type for n in kept} >= {"LayerNormalization", "ReduceMean", "Pow", "Sqrt"}
    floats = (f32, onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16)  # (not the int64 axes inputs)
    for n in kept:
        assert all(types[t] == f32 for t in [*n.input, *n.output] if t and types[t] in floats), n.name
    mm = [n for n in nodes if n.op_type in ("MatMul", "Gemm")]
    assert mm and all(types[n.output[0]] == low for n in mm)


def _run(path: Path, x: np.ndarray, level: str = "ORT_ENABLE_EXTENDED") -> np.ndarray:
    o = ort.SessionOptions()
    o.graph_optimization_level = getattr(ort.GraphOptimizationLevel, level)
    return ort.InferenceSession(str(path), o, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]


def test_fp16_is_mixed_precision_with_fp32_io_and_norms(fp32: Path, tmp_path: Path) -> None:
    info = convert_fp16(fp32, tmp_path / "fp16.onnx")
    assert info["tool"] == "nvidia-modelopt onnx.autocast" and info["tool_version"] != "not installed"
    assert 0 < info["low_precision_nodes"] < info["compute_nodes"]
    _check_mixed(tmp_path / "fp16.onnx", onnx.TensorProto.FLOAT16)
    x = np.random.default_rng(0).standard_normal((3, 20, 16)).astype(np.float32)
    ref, got = _run(fp32, x, "ORT_ENABLE_ALL"), _run(tmp_path / "fp16.onnx", x)
    cos = float((ref * got).sum() / (np.linalg.norm(ref) * np.linalg.norm(got)))
    assert got.dtype == np.float32 and got.shape == ref.shape
    assert cos > FP16_TOLERANCE["cosine"] and np.abs(ref - got).max() < FP16_TOLERANCE["max_abs"]
    assert np.abs(ref - got).max() > 0  # it really computes in fp16
    with pytest.raises(ConfigError):
        convert_fp16(fp32, tmp_path / "x.onnx", keep_io_types=False)


def test_precision_artifact_writes_validates_reuses_and_refuses(fp32: Path) -> None:
    assert precision_artifact(fp32, "fp32").path == fp32  # fp32: the artifact unchanged
    art = precision_artifact(fp32, "fp16")
    assert art.path == precision_path(fp32, "fp16") == fp32.with_name("block.fp16.onnx")
    side = json.loads(sidecar_path(art.path).read_text())
    assert precision_of(side) == "fp16" and side["precision_tool"] == "nvidia-modelopt onnx.autocast"
    assert art.precision == "fp16" and precision_artifact(fp32, "fp32").precision == "fp32"
    assert side["precision_tool_version"] and len(side["precision_source_sha256"]) == 64
    assert side["onnxruntime_cpu_optimization"] == "extended"
    val = side["validation"]
    assert val["feeds"] == 2 and val["worst_cosine"] > FP16_TOLERANCE["cosine"]
    assert 0 < val["worst_max_abs"] < FP16_TOLERANCE["max_abs"]
    # same source: reused, not rewritten
    mtime = art.path.stat().st_mtime_ns
    assert precision_artifact(fp32, "fp16").path.stat().st_mtime_ns == mtime
    # a file made from another source is refused unless forced
    side["precision_source_sha256"] = "0" * 64
    sidecar_path(art.path).write_text(json.dumps(side))
    with pytest.raises(OutputExistsError, match=r"block\.fp16\.onnx"):
        precision_artifact(fp32, "fp16")
    forced = precision_artifact(fp32, "fp16", force=True)
    assert forced.sidecar["precision_source_sha256"] != "0" * 64
    # same source, other settings (e.g. an older block list): refused too, naming the settings
    side = dict(
        forced.sidecar, precision_settings={**forced.sidecar["precision_settings"], "keep_fp32_ops": []}
    )
    sidecar_path(art.path).write_text(json.dumps(side))
    with pytest.raises(OutputExistsError, match="other settings"):
        precision_artifact(fp32, "fp16")
    precision_artifact(fp32, "fp16", force=True)
    # int8 needs calibration feeds; a derived artifact is not a source
    with pytest.raises(ConfigError, match="calibration"):
        precision_artifact(fp32, "int8")
    with pytest.raises(ConfigError, match="fp32 export"):
        precision_artifact(art.path, "int8")
    with pytest.raises(ConfigError):
        precision_artifact(fp32, "fp8")


def test_int8_artifact_passes_lint_and_stays_close(fp32: Path) -> None:
    g = np.random.default_rng(1)
    calib = [{"x": g.standard_normal((1, 12, 16)).astype(np.float32)} for _ in range(8)]
    art = precision_artifact(fp32, "int8", calibration=calib)
    side = art.sidecar
    assert side["precision"] == "int8" and "QuantizeBias=False" in side["precision_tool"]
    assert (
        side["precision_settings"]["qdq_nodes"] > 0 and side["precision_settings"]["calibration_batches"] == 8
    )
    assert side["validation"]["feeds"] == 3 and side["validation"]["worst_cosine"] > 0.99
    # weight MatMuls are quantized; the attention matmuls (activation x activation) stay float
    model = onnx.load(str(art.path))
    consts = {i.name for i in model.graph.initializer}
    dq = {n.output[0]: n.input[0] for n in model.graph.node if n.op_type == "DequantizeLinear"}
    mms = [n for n in model.graph.node if n.op_type == "MatMul"]
    weight_mm = [n for n in mms if any(dq.get(i) in consts for i in n.input)]
    attention_mm = [n for n in mms if n not in weight_mm]
    assert weight_mm and len(attention_mm) == 2
    assert not any(i in dq for n in attention_mm for i in n.input)


def test_bf16_artifact_is_mixed_and_says_where_it_runs(fp32: Path) -> None:
    art = precision_artifact(fp32, "bf16")
    _check_mixed(art.path, onnx.TensorProto.BFLOAT16)
    assert art.sidecar["precision_settings"]["opset"] >= 22
    val = art.sidecar["validation"]
    # onnxruntime's CPU provider has no bf16 MatMul/Gemm kernels: recorded, not hidden
    assert "skipped" in val or val["worst_cosine"] > 0.999
