"""export/int8_dilated.py splits a dilated 3×3 conv into one 1×1 conv per tap, over the region the tap
reaches, and export/int8_cpu.py's fold_pad_qdq runs the Pads that splitting writes on uint8: the split
graph gives the conv's output at every size (also when the map is no taller than the dilation, where the
outer taps read only padding), convs it cannot split are left alone, and only zero-valued constant pads
are folded."""

from __future__ import annotations

from collections import Counter

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from zsplg_fast.export.int8_cpu import fold_pad_qdq
from zsplg_fast.export.int8_dilated import split_dilated_taps

CIN, COUT = 8, 16


def _conv_model(
    dilation: int, pads: list[int], strides: tuple[int, int] = (1, 1), bias: bool = True
) -> onnx.ModelProto:
    """One Conv (3×3, the given dilation / pads / strides) on a (1, CIN, H, W) input with dynamic H, W."""
    g = np.random.default_rng(0)
    inits = [numpy_helper.from_array(g.standard_normal((COUT, CIN, 3, 3)).astype(np.float32), "w")]
    inputs = ["x", "w"]
    if bias:
        inits.append(numpy_helper.from_array(g.standard_normal(COUT).astype(np.float32), "b"))
        inputs.append("b")
    conv = helper.make_node(
        "Conv",
        inputs,
        ["y"],
        name="aspp",
        kernel_shape=[3, 3],
        dilations=[dilation] * 2,
        pads=pads,
        strides=list(strides),
    )
    graph = helper.make_graph(
        [conv],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, CIN, "h", "w"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, COUT, "oh", "ow"])],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def _run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    return np.asarray(sess.run(None, {"x": x})[0])


@pytest.mark.parametrize("bias", [True, False])
def test_split_taps_gives_the_dilated_conv_at_every_size(bias: bool) -> None:
    ref = _conv_model(6, [6] * 4, bias=bias)
    split = onnx.ModelProto()
    split.CopyFrom(ref)
    assert split_dilated_taps(split) == 1
    onnx.checker.check_model(split)
    convs = [n for n in split.graph.node if n.op_type == "Conv"]
    assert len(convs) == 9  # one 1×1 conv per tap
    kernels = [
        list(helper.get_attribute_value(a)) for n in convs for a in n.attribute if a.name == "kernel_shape"
    ]
    assert kernels == [[1, 1]] * 9
    assert "w" not in {t.name for t in split.graph.initializer}  # the 3×3 weight is gone
    g = np.random.default_rng(1)
    # taller than d, as tall as d, shorter than d (outer taps read only padding), one row, non-square
    for h, w in [(33, 33), (6, 6), (4, 5), (1, 7), (13, 3), (20, 9)]:
        x = g.standard_normal((1, CIN, h, w)).astype(np.float32)
        a, b = _run(ref, x), _run(split, x)
        assert a.shape == b.shape == (1, COUT, h, w)
        np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(
    ("dilation", "pads", "strides"),
    [
        (2, [2] * 4, (1, 1)),  # under MIN_DILATION: a backbone's dilated conv, little padding to skip
        (6, [6] * 4, (2, 2)),  # strided
        (6, [3] * 4, (1, 1)),  # padding other than the dilation
        (6, [6, 6, 0, 0], (1, 1)),  # asymmetric padding
    ],
)
def test_split_taps_leaves_other_convs_alone(
    dilation: int, pads: list[int], strides: tuple[int, int]
) -> None:
    model = _conv_model(dilation, pads, strides)
    before = model.SerializeToString()
    assert split_dilated_taps(model) == 0
    assert model.SerializeToString() == before


def _qdq_pad_model(pad_value: float | None) -> onnx.ModelProto:
    """x → Q → DQ → Pad(constant) → Q → DQ → y: the shape quantize_static gives a quantized Pad."""
    inits = [
        numpy_helper.from_array(np.array(0.05, np.float32), "s"),
        numpy_helper.from_array(np.array(100, np.uint8), "zp"),
        numpy_helper.from_array(np.array(0.06, np.float32), "s2"),
        numpy_helper.from_array(np.array(90, np.uint8), "zp2"),
        numpy_helper.from_array(np.array([0, 0, 2, 0, 0, 0, 0, 3], np.int64), "pads"),
    ]
    pad_inputs = ["xd", "pads"]
    if pad_value is not None:
        inits.append(numpy_helper.from_array(np.array(pad_value, np.float32), "value"))
        pad_inputs.append("value")
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "s", "zp"], ["xq"]),
        helper.make_node("DequantizeLinear", ["xq", "s", "zp"], ["xd"]),
        helper.make_node("Pad", pad_inputs, ["p"], mode="constant"),
        helper.make_node("QuantizeLinear", ["p", "s2", "zp2"], ["pq"]),
        helper.make_node("DequantizeLinear", ["pq", "s2", "zp2"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 5, 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 7, 9])],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


@pytest.mark.parametrize("pad_value", [None, 0.0])
def test_fold_pad_qdq_pads_the_uint8_tensor_with_its_zero_point(pad_value: float | None) -> None:
    ref = _qdq_pad_model(pad_value)
    folded = onnx.ModelProto()
    folded.CopyFrom(ref)
    assert fold_pad_qdq(folded) == 1
    onnx.checker.check_model(folded)
    ops = Counter(n.op_type for n in folded.graph.node)
    assert ops == Counter({"QuantizeLinear": 1, "DequantizeLinear": 1, "Pad": 1})
    pad = next(n for n in folded.graph.node if n.op_type == "Pad")
    assert pad.input[2] == "zp"  # the input's zero point: 0.0 once dequantized
    x = np.random.default_rng(2).uniform(-3, 3, (1, 4, 5, 6)).astype(np.float32)
    a, b = _run(ref, x), _run(folded, x)
    assert b.shape == (1, 4, 7, 9)
    assert np.all(b[:, :, :2] == 0) and np.all(b[:, :, :, 6:] == 0)
    # one quantization (the input's) instead of two: within a step of the input's scale
    np.testing.assert_allclose(b, a, atol=0.06 + 1e-6)


def test_fold_pad_qdq_leaves_a_nonzero_pad_value_in_float() -> None:
    model = _qdq_pad_model(1.5)
    before = model.SerializeToString()
    assert fold_pad_qdq(model) == 0
    assert model.SerializeToString() == before
