"""Static int8 QDQ on top of the fp16 graph (``int8_base: fp16``), for TensorRT.

With an fp32 base (:mod:`.int8`, the default), everything outside the quantized ops stays fp32, and a
strongly typed TensorRT plan runs those layers in fp32. With an fp16 base the non-quantized layers run
in fp16 as in the fp16 artifact (norms, softmax, reductions and the other :data:`FP32_OPS` kept fp32,
fp32 I/O) and the quantized ones in int8: NVIDIA's recommended "int8 + fp16" mix for TensorRT.

Tool: NVIDIA ModelOpt's ``modelopt.onnx.quantization.quantize(quantize_mode="int8",
high_precision_dtype="fp16")``, which inserts the QDQ and casts the rest to fp16 in one pass (its
scales typed to match). onnxruntime's ``quantize_static`` cannot do it: on an AutoCast fp16 model it
writes float32 scales for fp16 tensors (an invalid graph, "Type 'tensor(float16)' of input parameter
... of operator (QuantizeLinear) ... is invalid"; with the scales fixed by hand, onnxruntime's own QDQ
fusions refuse fp16 scales). Calibration runs on onnxruntime CPU (``calibration_eps=["cpu"]``) through
the same :class:`~.int8.FeedsReader` feeds; the op list per spec, the float attention MatMuls and the
symmetric int8 (zero point 0) checked by :func:`~.qdq_lint.lint_qdq` are as for the fp32 base.

On onnxruntime CPU this form runs only at graph level ``basic`` (its QDQ fusions refuse fp16 scales,
recorded as the sidecar's ``onnxruntime_cpu_optimization``) and without int8 kernels, so the CPU paths
keep the fp32 base; ``build --int8-base fp16`` asks for this one.
"""

from __future__ import annotations

import contextlib
import io
import logging
import tempfile
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from zsplg_fast.errors import ExportFailedError, MissingDependencyError
from zsplg_fast.export.int8 import (
    Feeds,
    _as_reader,
    _publish,
    activation_matmuls,
    count_qdq,
    uses_external_data,
)
from zsplg_fast.export.mixed_precision import FP32_OPS, PRECISION_EXTRA_INSTALL, modelopt_version
from zsplg_fast.export.qdq_lint import lint_qdq

INT8_BASES = ("fp32", "fp16")


def _modelopt_quantize() -> Any:
    try:
        from modelopt.onnx.quantization import quantize
    except ImportError as e:
        raise MissingDependencyError(
            "nvidia-modelopt", "int8 on an fp16 graph", PRECISION_EXTRA_INSTALL
        ) from e
    return quantize


def quantize_int8_fp16(
    onnx_in: str | Path,
    onnx_out: str | Path,
    calibration: Iterable[Feeds],
    *,
    op_types: Sequence[str],
    keep_fp32_ops: Sequence[str] = FP32_OPS,
    weight_matmuls_only: bool = True,
    external_data: bool | None = None,
) -> dict[str, Any]:
    """fp32 ONNX → int8 QDQ + fp16 ONNX (fp32 I/O), written atomically (with ``.data`` when external).

    Args:
        onnx_in: an fp32 model.
        onnx_out: destination ``.onnx``.
        calibration: feeds dicts (input name → float32 array) as at inference time.
        op_types: node types to quantize (the spec's int8 op list).
        keep_fp32_ops: op types kept in fp32 (as the fp16 artifact).
        weight_matmuls_only: leave attention's activation × activation MatMuls unquantized.
        external_data: external-data output; None = when the source uses it or is over ~1.8 GB.
    Returns:
        The record for the sidecar's ``precision_settings``.
    Raises:
        MissingDependencyError: nvidia-modelopt is not installed.
        ExportFailedError: ModelOpt failed or the calibration data were empty.
        QdqLintError: the result holds nodes TensorRT cannot consume.
    """
    quantize = _modelopt_quantize()
    src, dst = Path(onnx_in), Path(onnx_out)
    external = uses_external_data(src) if external_data is None else bool(external_data)
    reader = _as_reader(calibration)
    excluded = activation_matmuls(src) if weight_matmuls_only else []
    dst.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{dst.name}.", suffix=".partial", dir=dst.parent) as part:
        out = Path(part) / dst.name
        names = ("modelopt", None)
        levels = [logging.getLogger(n).level for n in names]
        try:
            for n in names:
                logging.getLogger(n).setLevel(logging.CRITICAL)  # "no GPU" and per-node notes
            with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
                warnings.simplefilter("ignore")
                quantize(
                    str(src),
                    quantize_mode="int8",
                    calibration_data_reader=reader,
                    calibration_method="max",
                    calibration_eps=["cpu"],
                    op_types_to_quantize=list(op_types),
                    nodes_to_exclude=excluded,
                    op_types_to_exclude_fp16=list(keep_fp32_ops),
                    high_precision_dtype="fp16",
                    use_external_data_format=external,
                    output_path=str(out),
                    log_level="ERROR",
                )
        except Exception as e:  # ModelOpt raises plain exceptions
            raise ExportFailedError(
                src.name, "ModelOpt int8 (fp16 base)", f"{type(e).__name__}: {str(e)[:300]}"
            ) from e
        finally:
            for n, lv in zip(names, levels, strict=True):
                logging.getLogger(n).setLevel(lv)
        batches = reader.inner.count
        if batches == 0:
            raise ExportFailedError(src.name, "INT8 calibration", "the calibration data was empty")
        qdq = count_qdq(out)
        lint_qdq(out)
        _publish(out, dst)
    return {
        "method": "static QDQ on an fp16 graph (nvidia-modelopt, high_precision_dtype fp16)",
        "base": "fp16",
        "op_types": list(op_types),
        "keep_fp32_ops": list(keep_fp32_ops),
        "per_channel": True,
        "activation_type": "int8 (symmetric)",
        "weight_type": "int8 (symmetric)",
        "calibrate_method": "max",
        "calibration_batches": batches,
        "qdq_nodes": qdq,
        "weight_matmuls_only": weight_matmuls_only,
        "external_data": external,
        "tool_version": modelopt_version(),
    }
