"""Integer graph passes for the onnxruntime-CPU int8 form (``target="cpu"`` of :func:`.int8.quantize_int8`).

``quantize_static`` writes a QDQ graph; onnxruntime CPU then fuses each ``DequantizeLinear → op →
QuantizeLinear`` group into an integer kernel (``QLinearConv``, ``QLinearAdd``, ``QLinearConcat``,
``QLinearGlobalAveragePool``, …) and runs everything else in float between a DQ and a Q. Two ops of the
exported DeepLabV3+ stay float that way (onnxruntime 1.32, dumped with
``SessionOptions.optimized_model_filepath``), and some float work only fed a ``Shape``:

- **the image-pooling branch's mean**: the dynamo exporter writes ``AdaptiveAvgPool2d(1)`` as
  ``ReduceMean(axes=[-1, -2], keepdims=1)``, which has no integer kernel; onnxruntime fuses the same
  mean written as ``GlobalAveragePool`` into ``QLinearGlobalAveragePool``. :func:`mean_to_global_pool`
  rewrites it (the same arithmetic: the mean over H and W of an (N, C, H, W) tensor);
- **bilinear ``Resize``**: onnxruntime's QDQ fusion drops the DQ/Q around a ``Resize`` only in nearest
  mode, so the ASPP upsampling (and the pooled branch's broadcast) ran DQ → float Resize → Q on
  uint8 activations; :func:`fold_resize_qdq` lets the ``Resize`` read and write the uint8 tensor itself,
  as onnxruntime's own QOperator format does (its ``QResize`` handler); onnxruntime CPU has uint8
  nearest/linear Resize kernels (NHWC, integer arithmetic after its layout pass). The Resize output
  keeps the input's scale and zero point (a linear interpolation stays inside the input's range), and
  the DequantizeLinear nodes that read it are given those parameters.

- **shapes**: :func:`shape_of_quantized` takes a ``Shape`` from the uint8 tensor, not its float copy.
- **constant ``Pad``** (the padded tap partials of :mod:`.int8_dilated`'s split convs): onnxruntime runs
  DQ → float Pad → Q; :func:`fold_pad_qdq` pads the uint8 tensor with its zero point (which dequantizes
  to the 0.0 the float Pad wrote).

The last ``Resize`` (logits → image size) writes the graph output in float and is left as it is.
Both passes are for the ``cpu`` target only: TensorRT's QDQ rules (:mod:`.qdq_lint`) want every
quantized tensor behind an explicit Q/DQ pair.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

RESIZE_INTEGER_MODES = ("nearest", "linear")  # onnxruntime CPU's uint8 Resize kernels
Pass = Callable[[Any], int]


def _consumers(graph: Any) -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = {}
    for n in graph.node:
        for i in n.input:
            out.setdefault(i, []).append(n)
    return out


def _attr(node: Any, name: str, default: Any) -> Any:
    from onnx import helper

    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def _constant_ints(graph: Any, name: str) -> list[int] | None:
    from onnx import numpy_helper

    for t in graph.initializer:
        if t.name == name:
            return [int(v) for v in np.asarray(numpy_helper.to_array(t)).reshape(-1)]
    for n in graph.node:
        if n.op_type == "Constant" and n.output[0] == name:
            return [int(v) for v in np.asarray(numpy_helper.to_array(_attr(n, "value", None))).reshape(-1)]
    return None


def _constant_floats(graph: Any, name: str) -> list[float] | None:
    from onnx import numpy_helper

    for t in graph.initializer:
        if t.name == name:
            return [float(v) for v in np.asarray(numpy_helper.to_array(t)).reshape(-1)]
    return None


def _rank(model: Any, name: str) -> int | None:
    for vi in [*model.graph.value_info, *model.graph.input, *model.graph.output]:
        if vi.name == name and vi.type.tensor_type.HasField("shape"):
            return len(vi.type.tensor_type.shape.dim)
    return None


def _quantized_between(graph: Any, node: Any, cons: dict[str, list[Any]]) -> tuple[Any, Any] | None:
    """(DQ, Q) when ``node`` reads a DequantizeLinear output and writes to one QuantizeLinear only."""
    prod = {o: n for n in graph.node for o in n.output}
    dq, users = prod.get(node.input[0]), cons.get(node.output[0], [])
    if dq is None or dq.op_type != "DequantizeLinear":
        return None
    if len(users) != 1 or users[0].op_type != "QuantizeLinear":
        return None
    return dq, users[0]


def mean_to_global_pool(model: Any) -> int:
    """``ReduceMean`` over H and W (keepdims) of a quantized 4-D tensor → ``GlobalAveragePool``, in place.

    Returns the number of nodes rewritten. Only a mean between a DQ and a Q is rewritten (so onnxruntime
    fuses it into ``QLinearGlobalAveragePool``; a DQ shared with other readers is fine, onnxruntime
    gives each reader its own, ``EnsureUniqueDQForNodeUnit``); axes must be the last two of a rank-4 input
    (``[2, 3]``, or ``[-2, -1]`` with the rank known from shape inference).
    """
    from onnx import helper

    graph, cons, done = model.graph, _consumers(model.graph), 0
    for i, n in enumerate(list(graph.node)):
        if n.op_type != "ReduceMean" or int(_attr(n, "keepdims", 1)) != 1 or len(n.input) < 2:
            continue
        axes = _constant_ints(graph, n.input[1])
        rank = _rank(model, n.input[0]) or _rank(model, n.output[0])
        spatial = sorted(axes or []) == [2, 3] or (sorted(axes or []) == [-2, -1] and rank == 4)
        if not spatial or _quantized_between(graph, n, cons) is None:
            continue
        pool = helper.make_node(
            "GlobalAveragePool", [n.input[0]], list(n.output), name=f"{n.name}_global_pool"
        )
        graph.node.remove(n)
        graph.node.insert(i, pool)
        done += 1
    return done


def _fold_qdq(graph: Any, node: Any, cons: dict[str, list[Any]]) -> Any | None:
    """Let ``node`` (between a DQ and a Q, :func:`_quantized_between`) read and write the uint8 tensor:
    its output keeps the input's scale and zero point, the DequantizeLinear readers of the old Q output
    are given them, and the Q (and the DQ, when nothing else reads it) is removed. Returns the DQ, or
    None (nothing changed) when the Q output has other readers or is a graph output."""
    pair = _quantized_between(graph, node, cons)
    if pair is None:
        return None
    dq, q = pair
    readers = cons.get(q.output[0], [])
    if any(r.op_type != "DequantizeLinear" for r in readers) or any(
        o.name == q.output[0] for o in graph.output
    ):
        return None
    for r in readers:
        del r.input[1:]
        r.input.extend(dq.input[1:])
    node.input[0] = dq.input[0]
    node.output[0] = q.output[0]
    graph.node.remove(q)
    if len(cons[dq.output[0]]) == 1:  # a DQ shared with other readers (e.g. a Shape) stays for them
        graph.node.remove(dq)
    return dq


def fold_resize_qdq(model: Any) -> int:
    """``DequantizeLinear → Resize → QuantizeLinear`` → a ``Resize`` on the uint8 tensor, in place.

    The Resize output keeps the input's scale and zero point; the DequantizeLinear readers of the old Q
    output are given them. Cubic resizes (no integer kernel) and resizes whose output is not quantized
    (the logits) are left as they are. Returns the number of resizes folded.
    """
    graph, done = model.graph, 0
    for n in list(graph.node):
        if n.op_type != "Resize" or str(_attr(n, "mode", b"nearest"), "utf-8") not in RESIZE_INTEGER_MODES:
            continue
        done += _fold_qdq(graph, n, _consumers(graph)) is not None
    return done


def fold_pad_qdq(model: Any) -> int:
    """``DequantizeLinear → Pad(constant 0) → QuantizeLinear`` → a ``Pad`` on the uint8 tensor, in place.

    onnxruntime keeps a quantized ``Pad`` in float between a DQ and a Q (the tap convs of
    :mod:`.int8_dilated` pad their outputs); on uint8 the pad value is the input's zero point, which
    dequantizes to the same 0.0, and the output keeps the input's scale. Only constant-mode pads
    with a zero (or absent) pad value and a scalar zero point are folded; returns the count.
    """
    graph, done = model.graph, 0
    for n in list(graph.node):
        if n.op_type != "Pad" or str(_attr(n, "mode", b"constant"), "utf-8") != "constant":
            continue
        value = n.input[2] if len(n.input) > 2 and n.input[2] else None
        if value is not None and _constant_floats(graph, value) != [0.0]:
            continue
        cons = _consumers(graph)
        pair = _quantized_between(graph, n, cons)
        if pair is None or len(pair[0].input) < 3 or _constant_floats(graph, pair[0].input[2]) is None:
            continue
        if len(_constant_floats(graph, pair[0].input[2]) or []) != 1:
            continue
        dq = _fold_qdq(graph, n, cons)
        if dq is None:
            continue
        while len(n.input) < 3:
            n.input.append("")
        n.input[2] = dq.input[2]  # pad with the zero point: 0.0 after dequantization
        done += 1
    return done


def shape_of_quantized(model: Any) -> int:
    """``Shape(DequantizeLinear(x))`` → ``Shape(x)``, in place (a DQ keeps the shape); returns the count.

    The dynamo export computes each Resize's output size from ``Shape`` of a feature map; reading the
    DQ output made onnxruntime transpose (NHWC → NCHW) and dequantize the whole map only to take its
    shape. A DequantizeLinear left without readers is removed.
    """
    graph, done = model.graph, 0
    prod = {o: n for n in graph.node for o in n.output}
    for n in list(graph.node):
        dq = prod.get(n.input[0]) if n.op_type == "Shape" else None
        if dq is None or dq.op_type != "DequantizeLinear":
            continue
        n.input[0] = dq.input[0]
        done += 1
        if not _consumers(graph).get(dq.output[0]) and not any(o.name == dq.output[0] for o in graph.output):
            graph.node.remove(dq)
    return done


CPU_PASSES: dict[str, Pass] = {
    "mean_to_global_pool": mean_to_global_pool,
    "fold_resize_qdq": fold_resize_qdq,
    "fold_pad_qdq": fold_pad_qdq,
    "shape_of_quantized": shape_of_quantized,
}


def apply_cpu_passes(model: Any) -> dict[str, int]:
    """Run :data:`CPU_PASSES` on a QDQ model in place; returns pass name → nodes rewritten."""
    return {name: fn(model) for name, fn in CPU_PASSES.items()}


def float_passes_on_file(src: Path, dst: Path, external: bool) -> tuple[Path, dict[str, int]]:
    """:mod:`.int8_dilated`'s passes on the pre-processed fp32 model at ``src`` (before
    ``quantize_static``); returns (the model to quantize: ``dst`` when a pass rewrote something, else
    ``src``; pass name -> nodes rewritten). ``external``: write ``dst`` with external data."""
    import onnx

    from zsplg_fast.export.int8_dilated import apply_float_passes

    model = onnx.load(str(src))
    done = apply_float_passes(model)
    if not any(done.values()):
        return src, done
    if external:
        onnx.save_model(model, str(dst), save_as_external_data=True, location=dst.name + ".data")
    else:
        onnx.save_model(model, str(dst))
    return dst, done


def integer_passes_on_file(path: Path, external: bool) -> dict[str, int]:
    """Run :data:`CPU_PASSES` on the quantized model at ``path`` (rewritten in place, with its external
    data when it has some); returns pass name -> nodes rewritten."""
    import onnx

    model = onnx.load(str(path))
    done = apply_cpu_passes(model)
    if any(done.values()):
        data = path.with_name(path.name + ".data")
        if external:
            data.unlink(missing_ok=True)
            onnx.save_model(model, str(path), save_as_external_data=True, location=data.name)
        else:
            onnx.save_model(model, str(path))
    return done
