"""The onnxruntime-CPU int8 form runs the exported DeepLabV3+ integer end to end (export/int8_cpu.py):
the image-pooling mean and the inner bilinear Resizes are quantized too, not only the convs, the ASPP's
dilated convs are split per tap (export/int8_dilated.py) with their Pads on uint8, and the output
stays close to fp32."""

from __future__ import annotations

import warnings
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from zsplg_fast.export.precision import int8_op_types, quantize_int8

SIZE = 96


@pytest.fixture(scope="module")
def segmenter_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny DeepLabV3+ exported by the ``segmenter`` spec (dynamo: its pooling mean is a ReduceMean)."""
    from zsplg_fast.export.onnx import export_onnx
    from zsplg_fast.export.specs import get_spec
    from zsplg_fast.models.segmenter import build_segmenter

    torch.manual_seed(0)
    model = build_segmenter("tiny", 4).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        art = export_onnx(get_spec("segmenter").bind(model), tmp_path_factory.mktemp("seg"), force=True)
    return Path(art.path)


def _feeds(n: int, seed: int) -> list[dict[str, np.ndarray]]:
    g = np.random.default_rng(seed)
    return [{"image": g.standard_normal((1, 3, SIZE, SIZE)).astype(np.float32)} for _ in range(n)]


def _session(path: Path, optimized: Path | None = None) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.intra_op_num_threads = 1
    opts.log_severity_level = 3
    if optimized is not None:
        opts.optimized_model_filepath = str(optimized)
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def _ops(path: Path) -> Counter[str]:
    return Counter(n.op_type for n in onnx.load(str(path), load_external_data=False).graph.node)


def test_cpu_int8_quantizes_the_pooling_mean_and_inner_resizes(segmenter_onnx: Path, tmp_path: Path) -> None:
    src_ops = _ops(segmenter_onnx)
    assert src_ops["ReduceMean"] == 1 and src_ops["Resize"] == 3  # what the dynamo export writes
    out = tmp_path / "segmenter.int8-cpu.onnx"
    report = quantize_int8(
        segmenter_onnx, out, _feeds(4, 0), op_types=int8_op_types("segmenter", "cpu"), target="cpu"
    )
    assert report.integer_passes is not None
    assert report.integer_passes["mean_to_global_pool"] == 1
    assert report.integer_passes["fold_resize_qdq"] == 2  # the logits' Resize writes the float output
    # the ASPP's three dilated convs (rates 6, 12, 18) split per tap (export/int8_dilated.py);
    # at 96² their map is 6×6, no taller than any rate: the outer taps read only padding
    assert report.float_passes == {"split_dilated_taps": 3}
    assert report.integer_passes["fold_pad_qdq"] == 24  # eight padded tap partials per split conv
    model = onnx.load(str(out))
    prod = {o: n for n in model.graph.node for o in n.output}
    ops = Counter(n.op_type for n in model.graph.node)
    assert ops["ReduceMean"] == 0 and ops["GlobalAveragePool"] == 1
    resizes = [n for n in model.graph.node if n.op_type == "Resize"]
    on_uint8 = [
        n for n in resizes if n.input[0] not in prod or prod[n.input[0]].op_type != "DequantizeLinear"
    ]
    assert len(on_uint8) == 2
    # what onnxruntime CPU makes of it: integer kernels between the convs, one float DQ (the logits)
    opt = tmp_path / "optimized.onnx"
    fused = _session(out, opt)
    got_ops = _ops(opt)
    assert (
        got_ops["QLinearGlobalAveragePool"] == 1
        and got_ops["QLinearAdd"] >= 4
        and got_ops["QLinearConcat"] == 2
    )
    assert got_ops["ReduceMean"] == 0 and got_ops["DequantizeLinear"] == 1 and got_ops["QuantizeLinear"] == 1
    assert got_ops["QLinearConv"] == src_ops["Conv"] + 24  # each split conv is nine 1×1 convs
    # and the labels stay those of fp32
    ref = _session(segmenter_onnx)
    for feeds in _feeds(3, 1):
        a, b = ref.run(None, feeds)[0], fused.run(None, feeds)[0]
        cosine = float((a * b).sum() / np.linalg.norm(a) / np.linalg.norm(b))
        assert cosine > 0.999, cosine
        assert float((a.argmax(1) == b.argmax(1)).mean()) > 0.95


def test_tensorrt_int8_keeps_its_explicit_qdq(segmenter_onnx: Path, tmp_path: Path) -> None:
    """The passes are for the CPU form only: TensorRT's form keeps every quantized tensor behind Q/DQ."""
    out = tmp_path / "segmenter.int8.onnx"
    report: Any = quantize_int8(segmenter_onnx, out, _feeds(2, 0), op_types=int8_op_types("segmenter"))
    assert report.integer_passes is None and report.float_passes is None
    ops = _ops(out)
    assert ops["ReduceMean"] == 1 and ops["GlobalAveragePool"] == 0
    assert ops["Pad"] == 0 and ops["Conv"] == _ops(segmenter_onnx)["Conv"]  # no dilated conv split
