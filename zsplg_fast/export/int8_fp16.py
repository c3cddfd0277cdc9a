"""Static int8 QDQ on top of the fp16 graph (``int8_base: fp16``), for TensorRT.

With an fp32 base (:mod:`.int8`, the default), everything outside the quantized ops stays fp32, and a
strongly typed TensorRT plan runs those layers in fp32. With an fp16 base the non-quantized layers run
in fp16 as in the fp16 artifact (Softmax included; norms, reductions and the other :data:`FP32_OPS`
kept fp32, fp32 I/O) and the quantized ones in int8: NVIDIA's recommended "int8 + fp16" mix for TensorRT.

Tool: NVIDIA ModelOpt's ``modelopt.onnx.quantization.quantize(quantize_mode="int8",
high_precision_dtype="fp16")``, which inserts the QDQ and casts the rest to fp16 in one pass (its
scales typed to match). onnxruntime's ``quantize_static`` cannot do it: on an AutoCast fp16 model it
writes float32 scales for fp16 tensors (an invalid graph, "Type 'tensor(float16)' of input parameter
... of operator (QuantizeLinear) ... is invalid"; with the scales fixed by hand, onnxruntime's own QDQ
fusions refuse fp16 scales). Calibration runs on onnxruntime CPU (``calibration_eps=["cpu"]``) through
the same feeds as the fp32 base (a replayable reader); the op list per spec, the float attention
MatMuls and the symmetric int8 (zero point 0) checked by :func:`~.qdq_lint.lint_qdq` are as for the
fp32 base.

On onnxruntime CPU this form runs only at graph level ``basic`` (its QDQ fusions refuse fp16 scales,
recorded as the sidecar's ``onnxruntime_cpu_optimization``) and without int8 kernels, so the CPU paths
keep the fp32 base (``precision_artifact``'s default, ``build --int8-base fp32``); ``build`` (TensorRT)
makes this one by default.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import subprocess
import sys
import tempfile
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from zsplg_fast.errors import ExportFailedError, MissingDependencyError
from zsplg_fast.export.int8 import (
    Feeds,
    _publish,
    activation_matmuls,
    count_qdq,
    uses_external_data,
)
from zsplg_fast.export.mixed_precision import FP32_OPS, PRECISION_EXTRA_INSTALL, modelopt_version
from zsplg_fast.export.qdq_lint import lint_qdq

INT8_BASES = ("fp32", "fp16")
_INSTALL = f"{PRECISION_EXTRA_INSTALL}; or QDQ on the fp32 graph: build --int8-base fp32"


def _modelopt_quantize() -> Any:
    try:
        from modelopt.onnx.quantization import quantize
    except ImportError as e:
        raise MissingDependencyError("nvidia-modelopt", "int8 on an fp16 graph", _INSTALL) from e
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
    import importlib.util

    if importlib.util.find_spec("modelopt") is None:  # checked without importing it here (see below)
        raise MissingDependencyError("nvidia-modelopt", "int8 on an fp16 graph", _INSTALL)
    src, dst = Path(onnx_in), Path(onnx_out)
    external = uses_external_data(src) if external_data is None else bool(external_data)
    excluded = activation_matmuls(src) if weight_matmuls_only else []
    dst.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{dst.name}.", suffix=".partial", dir=dst.parent) as part:
        out = Path(part) / dst.name
        feeds = list(calibration)
        np.savez(
            Path(part) / "calib.npz", **{f"{i}/{k}": v for i, f in enumerate(feeds) for k, v in f.items()}
        )
        job = {
            "src": str(src),
            "out": str(out),
            "calib": str(Path(part) / "calib.npz"),
            "count": len(feeds),
            "op_types": list(op_types),
            "nodes_to_exclude": excluded,
            "keep_fp32_ops": list(keep_fp32_ops),
            "external": external,
        }
        # a child process: ModelOpt patches onnxruntime.quantization's classes when it runs, which
        # breaks later quantize_static calls in the same process (measured: "Quantization parameters
        # are not specified for param image")
        res = subprocess.run(
            [sys.executable, "-m", "zsplg_fast.export.int8_fp16", json.dumps(job)],
            capture_output=True,
            text=True,
            check=False,
        )
        if res.returncode != 0 or not out.is_file():
            tail = (res.stderr.strip().splitlines() or ["no output"])[-1][:300]
            raise ExportFailedError(src.name, "ModelOpt int8 (fp16 base)", tail)
        batches = int(json.loads(res.stdout.strip().splitlines()[-1])["batches"])
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


def _replay_reader(feeds: list[dict[str, np.ndarray]]) -> Any:
    """An onnxruntime ``CalibrationDataReader`` over ``feeds`` that also has what ModelOpt's own readers
    have: ``get_first`` (its MatMul-exclusion pass runs the first feed before calibrating; without it a
    model with MatMuls, e.g. SAM's decoders, failed with "'_Reader' object has no attribute 'get_first'")
    and ``rewind``. ``count``: the feeds handed out (calibration batches)."""
    from onnxruntime.quantization import CalibrationDataReader

    class _Replay(CalibrationDataReader):  # type: ignore[misc]
        def __init__(self) -> None:
            self.feeds = [{k: np.ascontiguousarray(v) for k, v in f.items()} for f in feeds]
            self.pos = self.count = 0

        def get_next(self) -> dict[str, np.ndarray] | None:
            if self.pos >= len(self.feeds):
                return None
            self.pos += 1
            self.count = max(self.count, self.pos)
            return self.feeds[self.pos - 1]

        def get_first(self) -> dict[str, np.ndarray] | None:
            return self.feeds[0] if self.feeds else None

        def rewind(self) -> None:
            self.pos = 0

    return _Replay()


def _child(job: dict[str, Any]) -> dict[str, Any]:
    """Run ModelOpt's int8 quantization (in a child process; see :func:`quantize_int8_fp16`)."""
    quantize = _modelopt_quantize()
    data = np.load(job["calib"])
    feeds: list[dict[str, np.ndarray]] = [{} for _ in range(job["count"])]
    for key in data.files:
        i, name = key.split("/", 1)
        feeds[int(i)][name] = data[key]
    reader = _replay_reader(feeds)
    logging.getLogger("modelopt").setLevel(logging.CRITICAL)  # "no GPU" and per-node notes
    logging.getLogger().setLevel(logging.CRITICAL)
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        quantize(
            job["src"],
            quantize_mode="int8",
            calibration_data_reader=reader,
            calibration_method="max",
            calibration_eps=["cpu"],
            op_types_to_quantize=job["op_types"],
            nodes_to_exclude=job["nodes_to_exclude"],
            op_types_to_exclude_fp16=job["keep_fp32_ops"],
            high_precision_dtype="fp16",
            use_external_data_format=job["external"],
            output_path=job["out"],
            log_level="ERROR",
        )
    return {"batches": reader.count}


if __name__ == "__main__":
    print(json.dumps(_child(json.loads(sys.argv[1]))))
