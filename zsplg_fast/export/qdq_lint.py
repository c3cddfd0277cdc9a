"""Refuse, at export time, a quantized (QDQ) ONNX graph that TensorRT's ONNX parser cannot consume.

TensorRT builds INT8 from *explicit* quantization: ``QuantizeLinear`` / ``DequantizeLinear`` pairs whose
scales it folds at build time. The rules below are what its documentation ("Explicit Quantization",
"Q/DQ layer placement", and the ONNX parser's operator support for Q/DQ) and its issue tracker state;
each one names the node it refuses:

1. ``DequantizeLinear`` of an INT32 tensor. onnxruntime's ``quantize_static`` stores Conv/Gemm biases
   as INT32 behind a ``DequantizeLinear`` by default; TensorRT rejects it ("Dequantize ... INT32 is not
   supported", NVIDIA/TensorRT#4542, #3360). Quantize with ``QuantizeBias: False``.
2. Quantized types other than INT8 / FP8 (E4M3) / INT4 on a Q or DQ node (UINT8 in particular, which is
   also what ``QuantizeLinear`` produces when it has no zero point and no ``output_dtype``): TensorRT's
   quantized types are signed.
3. Scales that are not build-time constants (an initializer or a ``Constant`` node): TensorRT folds
   the scale into the engine, so it must be known when the plan is built.
4. Non-positive or non-finite scales.
5. Non-zero zero points: TensorRT supports symmetric quantization only (zero point 0).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from zsplg_fast.errors import QdqLintError

QDQ_OPS = ("QuantizeLinear", "DequantizeLinear")
_ONNX_TYPE_NAMES = {1: "FLOAT", 2: "UINT8", 3: "INT8", 6: "INT32", 7: "INT64", 10: "FLOAT16", 16: "BFLOAT16"}
# TensorProto: INT8 = 3, FLOAT8E4M3FN = 17, INT4 = 22 (the quantized types TensorRT's parser accepts)
TRT_QUANT_TYPES = {3: "INT8", 17: "FLOAT8E4M3FN", 22: "INT4"}


def _type_name(t: int) -> str:
    import onnx

    try:
        return str(onnx.TensorProto.DataType.Name(t))
    except ValueError:
        return _ONNX_TYPE_NAMES.get(t, str(t))


def _constants(graph: Any, base_dir: str = "") -> dict[str, np.ndarray]:
    """The scales and zero points of the Q/DQ nodes that are initializers or ``Constant`` outputs, by
    name. Only those are read, so a model in external data (over 2 GB) is never loaded whole; an
    external tensor is read from ``base_dir`` (the model's folder)."""
    from onnx import numpy_helper

    wanted = {i for n in graph.node if n.op_type in QDQ_OPS for i in n.input[1:3] if i}
    out = {i.name: numpy_helper.to_array(i, base_dir) for i in graph.initializer if i.name in wanted}
    for n in graph.node:
        if n.op_type == "Constant" and n.output[0] in wanted:
            for a in n.attribute:
                if a.name == "value":
                    out[n.output[0]] = numpy_helper.to_array(a.t)
    return out


def _elem_types(model: Any) -> dict[str, int]:
    """Element type of every tensor ONNX's type inference resolves (plus inputs and initializers)."""
    import onnx

    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception:  # inference can fail on exotic graphs; the initializer types still apply
        inferred = model
    g = inferred.graph
    types = {v.name: v.type.tensor_type.elem_type for v in [*g.value_info, *g.input, *g.output]}
    types.update({i.name: i.data_type for i in g.initializer})
    return {k: v for k, v in types.items() if v}


def _quant_type(node: Any, types: dict[str, int]) -> int:
    """The quantized type a Q produces: ``output_dtype`` if set, else the zero point's, else UINT8."""
    for a in node.attribute:
        if a.name == "output_dtype" and a.i:
            return int(a.i)
    if len(node.input) > 2 and node.input[2]:
        return types.get(node.input[2], 2)
    return 2  # ONNX: no zero point and no output_dtype → uint8


def qdq_problems(model: Any, base_dir: str | Path = "") -> list[tuple[str, str]]:
    """``(node name, what is wrong)`` for every Q/DQ node of ``model`` (an ``onnx.ModelProto``) that
    TensorRT cannot consume (rules in the module docstring); empty when the graph is fine.
    ``base_dir``: where the model's external data lives (when it was loaded without it)."""
    g = model.graph
    consts = _constants(g, str(base_dir))
    types = _elem_types(model)
    problems: list[tuple[str, str]] = []
    for i, n in enumerate(g.node):
        if n.op_type not in QDQ_OPS:
            continue
        name = n.name or f"{n.op_type}#{i}"
        if n.op_type == "DequantizeLinear":
            t = types.get(n.input[0])
            if t == 6:
                problems.append((name, f"DequantizeLinear of INT32 '{n.input[0]}' (a quantized bias)"))
            elif t is not None and t not in TRT_QUANT_TYPES:
                problems.append((name, f"DequantizeLinear of {_type_name(t)} (TensorRT: INT8/FP8/INT4)"))
        else:
            t = _quant_type(n, types)
            if t not in TRT_QUANT_TYPES:
                problems.append((name, f"QuantizeLinear to {_type_name(t)} (TensorRT: INT8/FP8/INT4)"))
        scale = consts.get(n.input[1]) if len(n.input) > 1 else None
        if scale is None:
            problems.append((name, f"scale '{n.input[1] if len(n.input) > 1 else ''}' is not a constant"))
        elif not (np.isfinite(scale).all() and (scale > 0).all()):
            problems.append((name, "scale has non-positive or non-finite values"))
        if len(n.input) > 2 and n.input[2]:
            zp = consts.get(n.input[2])
            if zp is None:
                problems.append((name, f"zero point '{n.input[2]}' is not a constant"))
            elif np.any(zp.astype(np.float64) != 0):
                problems.append((name, "zero point is not 0 (TensorRT quantization is symmetric)"))
    return problems


def lint_qdq(onnx_path: str | Path) -> None:
    """Check a QDQ ONNX file for what TensorRT cannot consume (see the module docstring).

    Raises:
        QdqLintError: listing each offending node and its rule (a graph without Q/DQ passes).
    """
    import onnx

    path = Path(onnx_path)
    model = onnx.load(str(path), load_external_data=False)  # the graph; scales are read one by one
    problems = qdq_problems(model, path.parent)
    if problems:
        raise QdqLintError(path, problems)
