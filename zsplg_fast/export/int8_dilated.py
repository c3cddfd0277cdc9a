"""A float-graph pass for the onnxruntime-CPU int8 form: dilated 3×3 convs split into one 1×1 conv per tap.

A 3×3 conv with dilation ``d`` and padding ``d`` (DeepLabV3+'s ASPP: rates 6, 12, 18 on a 33×33 map at
513²) reads zero padding for most of its taps: the top-left tap reaches input ``(i - d, j - d)``, which
exists only for outputs ``i, j ≥ d``. onnxruntime's fp32 NCHWc convolution skips those taps; its
integer convolution (MLAS ``ConvSym``, an indirection buffer whose padding entries point at a
zero-point vector) multiplies them all. Profiled on the ResNet-101 DeepLabV3+ at 513² (AVX2, onnxruntime
1.32): the three ASPP convs ran 1.36× faster in int8 than in fp32, against ~1.9× for the other convs.
At 33×33 the taps that read real input are 77 % (rate 6), 57 % (12) and 41 % (18) of all of them.

:func:`split_dilated_taps` writes the same conv as nine 1×1 convs, each over the input region its tap
reaches, so the padding is never multiplied. Per spatial axis of size ``S``, a tap at offset ``-d``
(output ``i`` reads input ``i - d``) convolves input ``[0, S - d)`` and is padded with ``d`` zeros
before; a tap at ``+d`` convolves ``[d, S)`` and is padded after; the centre tap reads the whole input
and carries the bias. The nine partials are added. When ``S ≤ d`` an outer tap reads only padding;
onnxruntime's Conv refuses an empty input, so it then convolves one real row (column) that lands
outside the ``S`` kept (a ``-d`` partial keeps its first ``S``, a ``+d`` one its last ``S``), and
contributes zeros as it should. (Splitting by kernel row only, three ``1×3`` convs, skipped the zero
rows but not the zero columns: measured in one locked run on the ResNet-101 model, int8-cpu 1.95× fp32
against the per-tap split's figure in bench/results/deploy_cpu_real_int8_aspp_taps.)

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


def _axis_bounds(pre: str, x: str, ax: int, d: str, one: str) -> tuple[list[Any], dict[str, str]]:
    """Shape arithmetic for one spatial axis ``ax`` of ``x`` (size S): the nodes and the names of
    ``S``, ``max(S - d, 1)`` (end of what a before-tap reads), ``min(d, S - 1)`` (start of what an
    after-tap reads) and ``-S`` (start of the last S rows), each a 1-element int64 tensor."""
    from onnx import helper

    t = f"{pre}_a{ax}"
    nodes = [
        helper.make_node("Shape", [x], [f"{t}_size"], start=ax, end=ax + 1, name=f"{t}_shape"),
        helper.make_node("Sub", [f"{t}_size", d], [f"{t}_sd"], name=f"{t}_sd"),
        helper.make_node("Max", [f"{t}_sd", one], [f"{t}_before_end"], name=f"{t}_before_end"),
        helper.make_node("Sub", [f"{t}_size", one], [f"{t}_s1"], name=f"{t}_s1"),
        helper.make_node("Min", [d, f"{t}_s1"], [f"{t}_after_start"], name=f"{t}_after_start"),
        helper.make_node("Neg", [f"{t}_size"], [f"{t}_minus"], name=f"{t}_minus"),
    ]
    names = {k: f"{t}_{k}" for k in ("size", "before_end", "after_start", "minus")}
    return nodes, names


def split_dilated_taps(model: Any, min_dilation: int = MIN_DILATION) -> int:
    """Split each dilated 3×3 conv of ``model`` (an fp32 ONNX ``ModelProto``, NCHW) into nine 1×1
    convs, one per tap, each over the input region that tap reaches (module docstring), in place.

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
        pre = f"{node.name or node.output[0]}_taps"
        dd, one, end = const(f"{pre}_d", [d]), const(f"{pre}_one", [1]), const(f"{pre}_end", [SLICE_END])
        zero = const(f"{pre}_zero", [0])
        new: list[Any] = []
        bounds = {}
        for ax in (2, 3):
            nodes, bounds[ax] = _axis_bounds(pre, x, ax, dd, one)
            new += nodes
        conv = {"kernel_shape": [1, 1], "strides": [1, 1]}
        parts = []
        for r in range(3):
            for c in range(3):
                t = f"{pre}_{r}{c}"
                wname = f"{t}_w"
                graph.initializer.append(
                    numpy_helper.from_array(np.ascontiguousarray(w[:, :, r : r + 1, c : c + 1]), wname)
                )
                if (r, c) == (1, 1):  # the centre tap reads the whole input, and carries the bias
                    new.append(
                        helper.make_node("Conv", [x, wname, *bias], [f"{t}_out"], name=f"{t}_conv", **conv)
                    )
                    parts.insert(0, f"{t}_out")
                    continue
                # per axis, offset 0: output i reads input i - d (slice [0, max(S-d, 1)), pad d before,
                # keep the first S); offset 2: input i + d (slice [min(d, S-1), S), pad d after, keep the
                # last S). One row/column at least (onnxruntime's Conv refuses an empty input); when
                # S <= d it lands outside the S kept, so the tap contributes zeros as it should
                axes, starts, ends, cstarts, cends, pads = [], [], [], [], [], [0] * 8
                for ax, off in ((2, r), (3, c)):
                    if off == 1:
                        continue
                    b = bounds[ax]
                    axes.append(ax)
                    if off == 0:
                        starts.append(zero), ends.append(b["before_end"]), pads.__setitem__(ax, d)
                        cstarts.append(zero), cends.append(b["size"])
                    else:
                        starts.append(b["after_start"]), ends.append(end), pads.__setitem__(4 + ax, d)
                        cstarts.append(b["minus"]), cends.append(end)
                ax_name = const(f"{t}_axes", axes)
                vecs = {}
                for key, vals in (("st", starts), ("en", ends), ("cst", cstarts), ("cen", cends)):
                    if len(vals) == 1:
                        vecs[key] = vals[0]
                    else:
                        vecs[key] = f"{t}_{key}"
                        new.append(helper.make_node("Concat", vals, [vecs[key]], axis=0, name=f"{t}_{key}"))
                new += [
                    helper.make_node(
                        "Slice", [x, vecs["st"], vecs["en"], ax_name], [f"{t}_in"], name=f"{t}_slice"
                    ),
                    helper.make_node("Conv", [f"{t}_in", wname], [f"{t}_conv"], name=f"{t}_conv", **conv),
                    helper.make_node(
                        "Pad",
                        [f"{t}_conv", const(f"{t}_pads", pads)],
                        [f"{t}_pad"],
                        name=f"{t}_pad",
                        mode="constant",
                    ),
                    helper.make_node(
                        "Slice",
                        [f"{t}_pad", vecs["cst"], vecs["cen"], ax_name],
                        [f"{t}_out"],
                        name=f"{t}_crop",
                    ),
                ]
                parts.append(f"{t}_out")
        acc = parts[0]
        for k, p in enumerate(parts[1:]):
            out = node.output[0] if k == len(parts) - 2 else f"{pre}_sum{k}"
            new.append(helper.make_node("Add", [acc, p], [out], name=f"{pre}_add{k}"))
            acc = out
        at = list(graph.node).index(node)
        graph.node.remove(node)
        if not any(node.input[1] in n.input for n in graph.node):  # the 3×3 weight, now unread
            graph.initializer.remove(weights.pop(node.input[1]))
        for i, n in enumerate(new):
            graph.node.insert(at + i, n)
        done += 1
    return done


FLOAT_PASSES = {"split_dilated_taps": split_dilated_taps}


def apply_float_passes(model: Any) -> dict[str, int]:
    """Run :data:`FLOAT_PASSES` on the pre-processed fp32 model in place; returns pass name → count."""
    return {name: fn(model) for name, fn in FLOAT_PASSES.items()}
