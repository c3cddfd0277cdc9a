"""Static QDQ INT8 and fp16 conversion of a small conv net ending in Resize (the segmenter's shape)."""

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

from zsplg_fast.errors import ConfigError, ExportFailedError
from zsplg_fast.export.precision import convert_fp16, quantize_int8


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


def test_fp16_keeps_float32_io_even_after_a_blocked_resize(fp32: Path, tmp_path: Path) -> None:
    info = convert_fp16(fp32, tmp_path / "fp16.onnx")
    assert info["keep_io_types"] and info["outputs_recast"] == ["logits"]
    sess = ort.InferenceSession(str(tmp_path / "fp16.onnx"), providers=["CPUExecutionProvider"])
    assert [o.type for o in sess.get_outputs()] == ["tensor(float)"]
    x = np.random.default_rng(1).standard_normal((1, 3, 24, 40)).astype(np.float32)
    got = sess.run(None, {"image": x})[0]
    assert got.dtype == np.float32 and _cos(_run(fp32, x), got) > 0.999
