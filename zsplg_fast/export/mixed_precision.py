"""fp16 / bf16 mixed-precision ONNX with NVIDIA ModelOpt's ONNX AutoCast (why this tool: precision.py).

Normalisation, reductions and the ops of decomposed norms and positional encodings stay fp32
(:data:`FP32_OPS`); graph inputs and outputs stay fp32 (``keep_io_types``), so callers feed and read
the same arrays as the fp32 model. Softmax computes in the graph's precision (issue 20, item 14): a
Cast pair around each attention Softmax would split the ``MatMul → Softmax → MatMul`` pattern that
TensorRT fuses into one fp16 attention kernel (which accumulates in fp32 internally). Its cost in label
fidelity, measured on the trained toy SAM with the decoder's attention softmax in fp16: mean best IoU
0.9999 against fp32, label mIoU unchanged (``bench/results/softmax_fp16.md``; torch emulation, as
onnxruntime's CPU provider computes an fp16 Softmax in fp32). Initializers above fp16's range stay
fp32 (AutoCast's ``init_max``).
AutoCast's data-range rule (``data_max``, which runs the model on random inputs) is off: random inputs
say little about real activations, and the op list already keeps the range-sensitive ops in fp32.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

from zsplg_fast.errors import ExportFailedError, MissingDependencyError
from zsplg_fast.utils.io import atomic_path

MIXED_PRECISIONS = ("fp16", "bf16")
PRECISION_EXTRA_INSTALL = (
    "pip install 'zsplg-fast[precision]' (nvidia-modelopt without its [onnx] extra, which would "
    "replace onnxruntime and downgrade onnx)"
)
FP32_OPS: tuple[str, ...] = (
    # normalisation (fused) and its decomposed form: mean / (x - mean)^2 / sqrt
    "LayerNormalization",
    "GroupNormalization",
    "InstanceNormalization",
    "BatchNormalization",
    "ReduceMean",
    "Pow",
    "Sqrt",
    "Reciprocal",
    # reductions (sums of many terms overflow or lose bits in fp16); Softmax is not here: see above
    "LogSoftmax",
    "ReduceSum",
    "ReduceSumSquare",
    "ReduceL1",
    "ReduceL2",
    "ReduceMax",
    "ReduceMin",
    "ReduceProd",
    "ReduceLogSum",
    "ReduceLogSumExp",
    "CumSum",
    # transcendental ops of positional encodings and exponentials (SAM's random-Fourier prompt PE)
    "Sin",
    "Cos",
    "Exp",
    "Log",
)


def modelopt_version() -> str:
    """Installed ``nvidia-modelopt`` version (``"not installed"`` when absent)."""
    try:
        return metadata.version("nvidia-modelopt")
    except metadata.PackageNotFoundError:
        return "not installed"


def _autocast() -> Any:
    try:
        from modelopt.onnx.autocast import convert_to_mixed_precision
    except ImportError as e:
        raise MissingDependencyError(
            "nvidia-modelopt", "fp16/bf16 ONNX (ModelOpt AutoCast)", PRECISION_EXTRA_INSTALL
        ) from e
    return convert_to_mixed_precision


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """AutoCast logs every node it classifies, and notes on its own and the root logger; keep errors."""
    names = ("modelopt", "modelopt.onnx", "modelopt.onnx.autocast", None)
    loggers = [logging.getLogger(n) for n in names]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, lv in zip(loggers, levels, strict=True):
            lg.setLevel(lv)


def low_precision_nodes(model: Any, precision: str) -> tuple[int, int]:
    """(nodes whose outputs are ``precision``, compute nodes) of an ONNX model; Casts are not counted."""
    import onnx

    want = onnx.TensorProto.FLOAT16 if precision == "fp16" else onnx.TensorProto.BFLOAT16
    g = onnx.shape_inference.infer_shapes(model).graph
    types = {v.name: v.type.tensor_type.elem_type for v in [*g.value_info, *g.output]}
    nodes = [n for n in g.node if n.op_type not in ("Cast", "Constant")]
    return sum(any(types.get(o) == want for o in n.output) for n in nodes), len(nodes)


def convert_mixed(
    onnx_in: str | Path,
    onnx_out: str | Path,
    precision: str = "fp16",
    keep_fp32_ops: Sequence[str] = FP32_OPS,
) -> dict[str, Any]:
    """fp32 ONNX → mixed fp16/bf16 ONNX (ModelOpt AutoCast), I/O fp32, written atomically.

    Args:
        onnx_in: an fp32 model (external data beside it is read).
        onnx_out: destination ``.onnx`` (single file; weights inline).
        precision: ``fp16`` | ``bf16`` (bf16 raises the opset to 22, AutoCast's minimum for bf16).
        keep_fp32_ops: op types kept in fp32.
    Returns:
        ``{"tool", "tool_version", "keep_fp32_ops", "low_precision_nodes", "compute_nodes", "opset"}``.
    Raises:
        MissingDependencyError: nvidia-modelopt is not installed.
        ExportFailedError: AutoCast failed.
    """
    import onnx

    if precision not in MIXED_PRECISIONS:
        raise ExportFailedError(Path(onnx_in).name, "mixed precision", f"unknown precision {precision!r}")
    convert = _autocast()
    with _quiet():
        try:
            model = convert(
                str(onnx_in),
                low_precision_type=precision,
                op_types_to_exclude=list(keep_fp32_ops),
                keep_io_types=True,
                data_max=float("inf"),
            )
        except Exception as e:  # AutoCast raises plain exceptions/assertions on graphs it cannot type
            raise ExportFailedError(
                Path(onnx_in).name, f"ModelOpt AutoCast ({precision})", f"{type(e).__name__}: {str(e)[:300]}"
            ) from e
    low, total = low_precision_nodes(model, precision)
    with atomic_path(onnx_out) as out:
        onnx.save_model(model, str(out))
    return {
        "tool": "nvidia-modelopt onnx.autocast",
        "tool_version": modelopt_version(),
        "keep_fp32_ops": list(keep_fp32_ops),
        "keep_io_types": True,
        "low_precision_nodes": low,
        "compute_nodes": total,
        "opset": int(next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)),
    }
