"""A float-graph pass for the onnxruntime-CPU int8 form: dilated 3×3 convs split by kernel row.

A 3×3 conv with dilation ``d`` and padding ``d`` (DeepLabV3+'s ASPP: rates 6, 12, 18 on a 33×33 map at
513²) reads zero padding for most of its taps: the top kernel row reaches input row ``i - d``, which
exists only for output rows ``i ≥ d``. onnxruntime's fp32 NCHWc convolution skips those taps;
its integer convolution (MLAS ``ConvSym``, an indirection buffer whose padding entries point at a
zero-point vector) multiplies them all. Profiled on the ResNet-101 DeepLabV3+ at 513² (AVX2, onnxruntime
1.32): the three ASPP convs ran 1.36× faster in int8 than in fp32, against ~1.9× for the other convs.

:func:`split_dilated_rows` writes the same conv as three row convs, each over the input rows it can
reach, so the zero rows are never multiplied:

- the middle kernel row: a ``1×3`` conv (dilation ``(1, d)``, padding ``(0, d)``) on the whole input,
  with the bias;
- the top row: the same ``1×3`` conv on input rows ``[0, H - d)``, padded with ``d`` zero rows on top;
- the bottom row: on input rows ``[d, H)``, padded with ``d`` zero rows below;
- each padded partial is cropped to ``H`` rows, and the three are added. When ``H ≤ d`` the top and
  bottom taps read only padding; onnxruntime's Conv refuses an empty input, so they then convolve one
  real row that lands outside the ``H`` rows kept (the top partial keeps its first ``H`` rows, the
  bottom one its last ``H``), and contribute zeros as they should.

Exact in real arithmetic (the sum of the same products); in the int8 form each partial and the sums get
their own calibrated uint8 range (``Slice`` / ``Pad`` / ``Add`` are quantized too, and
:func:`~.int8_cpu.fold_pad_qdq` lets the ``Pad`` work on the uint8 tensor). It runs on the fp32 graph
after ``quant_pre_process`` (BatchNorm already folded into the conv) and before ``quantize_static``,
for the ``cpu`` target only. Only dilations of at least :data:`MIN_DILATION` are split: a backbone's
dilation-2 convs waste little (about 8 % of the taps on a 33×33 map) and the split's extra ops cost
about as much.
"""

from __future__ import annotations

from typing import Any

import numpy as np

MIN_DILATION = 4
SLICE_END = int(np.iinfo(np.int64).max)  # "to the end" for Slice


def _attrs(node: Any) -> dict[str, Any]:
    from onnx import helper

    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _splittable(node: Any, weights: dict[str, Any], min_dilation: int) -> int:
    """The dilation of a conv this pass splits, else 0: 3×3, square dilation ≥ ``min_dilation``,
    padding equal to it on every side, stride 1, one group, constant weights."""
    if node.op_type != "Conv" or len(node.input) < 2 or node.input[1] not in weights:
        return 0
    a = _attrs(node)
    dil = list(a.get("dilations", [1, 1]))
    if list(a.get("kernel_shape", [])) != [3, 3] or len(dil) != 2 or dil[0] != dil[1]:
        return 0
    d = int(dil[0])
    same_pad = list(a.get("pads", [0, 0, 0, 0])) == [d] * 4
    plain = list(a.get("strides", [1, 1])) == [1, 1] and int(a.get("group", 1)) == 1
    auto = a.get("auto_pad", b"NOTSET") in (b"NOTSET", "NOTSET")
    return d if d >= min_dilation and same_pad and plain and auto else 0


def split_dilated_rows(model: Any, min_dilation: int = MIN_DILATION) -> int:
    """Split each dilated 3×3 conv of ``model`` (an fp32 ONNX ``ModelProto``, NCHW) into three row
    convs over the rows each kernel row reaches (module docstring), in place.

    Returns the number of convs split. The conv's output name is kept, so its readers are unchanged.
    """
    from onnx import helper, numpy_helper

    graph = model.graph
    weights = {t.name: t for t in graph.initializer}
    done = 0

    def const(name: str, value: Any) -> str:
        graph.initializer.append(numpy_helper.from_array(np.asarray(value, dtype=np.int64), name))
        return name

    for node in list(graph.node):
        d = _splittable(node, weights, min_dilation)
        if not d:
            continue
        x, w = node.input[0], numpy_helper.to_array(weights[node.input[1]])
        bias = [node.input[2]] if len(node.input) > 2 and node.input[2] else []
        pre = f"{node.name or node.output[0]}_rows"
        h, axis, one, dd = (
            f"{pre}_h",
            const(f"{pre}_axis", [2]),
            const(f"{pre}_one", [1]),
            const(f"{pre}_d", [d]),
        )
        new = [
            helper.make_node("Shape", [x], [h], start=2, end=3, name=f"{pre}_shape"),
            # rows the top kernel row reads: [0, max(H - d, 1)); the bottom one: [min(d, H - 1), H). One row
            # at least (onnxruntime's Conv refuses an empty input); when H <= d that row is cropped away
            helper.make_node("Sub", [h, dd], [f"{pre}_hd"], name=f"{pre}_hd"),
            helper.make_node("Max", [f"{pre}_hd", one], [f"{pre}_top_end"], name=f"{pre}_top_end"),
            helper.make_node("Sub", [h, one], [f"{pre}_h1"], name=f"{pre}_h1"),
            helper.make_node("Min", [dd, f"{pre}_h1"], [f"{pre}_bottom_start"], name=f"{pre}_bottom_start"),
            helper.make_node("Neg", [h], [f"{pre}_minus_h"], name=f"{pre}_minus_h"),
        ]
        conv = {"kernel_shape": [1, 3], "dilations": [1, d], "pads": [0, d, 0, d], "strides": [1, 1]}
        parts = []
        for row in range(3):
            wname = f"{pre}_w{row}"
            graph.initializer.append(
                numpy_helper.from_array(np.ascontiguousarray(w[:, :, row : row + 1]), wname)
            )
            if row == 1:
                parts.append(f"{pre}_y1")
                new.append(
                    helper.make_node("Conv", [x, wname, *bias], [parts[-1]], name=f"{pre}_conv1", **conv)
                )
                continue
            # row 0: output i reads input i - d, so its conv rows land at outputs d, d+1, ... (pad d on top,
            # keep the first H rows); row 2: input i + d, outputs ..., H-1-d (pad d below, keep the last H)
            t = f"{pre}_r{row}"
            if row == 0:
                start, end, pads = const(f"{t}_start", [0]), f"{pre}_top_end", [0, 0, d, 0, 0, 0, 0, 0]
                crop = [const(f"{t}_crop_start", [0]), h]
            else:
                start, end, pads = (
                    f"{pre}_bottom_start",
                    const(f"{t}_end", [SLICE_END]),
                    [0, 0, 0, 0, 0, 0, d, 0],
                )
                crop = [f"{pre}_minus_h", const(f"{t}_crop_end", [SLICE_END])]
            new += [
                helper.make_node("Slice", [x, start, end, axis], [f"{t}_in"], name=f"{t}_slice"),
                helper.make_node("Conv", [f"{t}_in", wname], [f"{t}_conv"], name=f"{t}_conv", **conv),
                helper.make_node(
                    "Pad",
                    [f"{t}_conv", const(f"{t}_pads", pads)],
                    [f"{t}_pad"],
                    name=f"{t}_pad",
                    mode="constant",
                ),
                helper.make_node("Slice", [f"{t}_pad", *crop, axis], [f"{t}_out"], name=f"{t}_crop"),
            ]
            parts.append(f"{t}_out")
        new += [
            helper.make_node("Add", [parts[0], parts[1]], [f"{pre}_sum"], name=f"{pre}_add0"),
            helper.make_node("Add", [f"{pre}_sum", parts[2]], [node.output[0]], name=f"{pre}_add1"),
        ]
        at = list(graph.node).index(node)
        graph.node.remove(node)
        if not any(node.input[1] in n.input for n in graph.node):  # the 3×3 weight, now unread
            graph.initializer.remove(weights.pop(node.input[1]))
        for i, n in enumerate(new):
            graph.node.insert(at + i, n)
        done += 1
    return done


FLOAT_PASSES = {"split_dilated_rows": split_dilated_rows}


def apply_float_passes(model: Any) -> dict[str, int]:
    """Run :data:`FLOAT_PASSES` on the pre-processed fp32 model in place; returns pass name → count."""
    return {name: fn(model) for name, fn in FLOAT_PASSES.items()}
