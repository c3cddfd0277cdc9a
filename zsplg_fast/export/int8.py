"""Static INT8 with explicit Q/DQ (onnxruntime.quantization) that TensorRT can parse.

(``export/quantize.py`` makes the *dynamic* INT8 ``onnx-int8`` format for CPU artifacts; this module
makes *static*, calibrated QDQ models, the int8 precision artifact that onnxruntime CPU/CUDA and
TensorRT all run.)

Follows the onnxruntime quantization guide (``quant_pre_process`` → ``quantize_static`` with a
``CalibrationDataReader``, QDQ format) with the settings measured in the shared notes:

- only ``Conv`` / ``MatMul`` / ``Gemm`` inputs are quantized: the default op list also quantizes the
  residual Add/Mul/Softmax/LayerNorm inputs, which cost accuracy (cosine 0.979 vs 0.9998 on CLIP);
- per-channel, symmetric int8 weights and symmetric int8 activations (zero point 0), which is what
  TensorRT's explicit-quantization path consumes;
- ``QuantizeBias: False``: biases stay float. onnxruntime's default stores them as INT32 behind a
  ``DequantizeLinear``, which TensorRT rejects (NVIDIA/TensorRT#4542, #3360); TensorRT fuses a float
  bias into the int8 Conv/Gemm itself. The written graph goes through :func:`~.qdq_lint.lint_qdq`;
- only MatMuls with a constant operand (weights) are quantized: the attention matmuls (activation ×
  activation) stay float, as ModelOpt's ``disable_mha_qdq`` does (onnxruntime's ``MatMulConstBOnly``
  option is not honoured by its QDQ MatMul handler, so they are passed as ``nodes_to_exclude``).
  Measured on the toy SAM decoder, int8 alone, 8 toy-world images: quantizing them too kept 60 % of
  the fp32 masks (mean best IoU 0.85); without them 95 % (0.94);
- ``quant_pre_process`` fails symbolic shape inference on legacy exports (and on some dynamo graphs
  with dynamic Resize sizes); it is retried with ``skip_symbolic_shape=True``, and the report records
  which way it went.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import tempfile
import warnings
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from zsplg_fast.errors import ConfigError, ExportFailedError, MissingDependencyError
from zsplg_fast.export.qdq_lint import lint_qdq
from zsplg_fast.utils.io import atomic_path

QUANT_OP_TYPES: tuple[str, ...] = ("Conv", "MatMul", "Gemm")
CALIBRATE_METHODS = ("minmax", "entropy", "percentile")
Feeds = Mapping[str, np.ndarray]


@dataclass
class QuantizeReport:
    """What was done, for the sidecar: op types, per-channel, symmetric, pre-processing, calibration."""

    method: str
    op_types: list[str]
    per_channel: bool
    activation_type: str
    weight_type: str
    symmetric: bool
    calibrate_method: str
    calibration_batches: int
    pre_process: str  # "symbolic" | "skip_symbolic_shape" | "failed: <reason>" | "off"
    qdq_nodes: int
    quantize_bias: bool = False
    weight_matmuls_only: bool = True

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _quantization() -> Any:
    try:
        import onnxruntime.quantization as q
    except ImportError as e:
        raise MissingDependencyError("onnxruntime", "INT8 quantization", "pip install onnxruntime") from e
    return q


class FeedsReader:
    """A ``CalibrationDataReader`` over an iterable of feeds dicts (input name → float32 array).

    ``feeds``: e.g. ``{"image": (1, 3, H, W) float32}`` per calibration image; sizes may differ
    between items when the model's axes are dynamic. Counts the batches it handed out.
    """

    def __init__(self, feeds: Iterable[Feeds]) -> None:
        self._it: Iterator[Feeds] = iter(feeds)
        self.count = 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        item = next(self._it, None)
        if item is None:
            return None
        self.count += 1
        return {k: np.ascontiguousarray(v) for k, v in item.items()}

    def rewind(self) -> None:  # part of the CalibrationDataReader interface; single pass here
        return None


def _as_reader(feeds: Iterable[Feeds]) -> Any:
    q = _quantization()

    class _Reader(q.CalibrationDataReader):  # type: ignore[misc, name-defined]
        def __init__(self) -> None:
            self.inner = FeedsReader(feeds)

        def get_next(self) -> dict[str, np.ndarray] | None:
            return self.inner.get_next()

    return _Reader()


@contextlib.contextmanager
def _cwd(path: Path) -> Iterator[None]:
    old = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(old)


def _pre_process(src: Path, dst: Path) -> str:
    """``quant_pre_process`` (optimisation + shape inference); retried without symbolic shapes."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    first = ""
    for skip in (False, True):
        try:  # symbolic shape inference drops temp files into the cwd: run it in dst's folder
            with contextlib.redirect_stdout(io.StringIO()), _cwd(dst.parent):
                quant_pre_process(str(src.resolve()), str(dst.resolve()), skip_symbolic_shape=skip)
            return "skip_symbolic_shape" if skip else "symbolic"
        except Exception as e:  # onnxruntime raises bare Exception / AssertionError here
            first = first or f"{type(e).__name__}: {str(e).strip()[:200]}"
    return f"failed: {first}"


def count_qdq(path: str | Path) -> int:
    """Number of QuantizeLinear + DequantizeLinear nodes in an ONNX file."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return sum(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in model.graph.node)


def activation_matmuls(path: str | Path) -> list[str]:
    """Names of the MatMul nodes of an ONNX file with no constant operand (attention's Q·Kᵀ and P·V).

    A tensor is constant when it is an initializer, a ``Constant`` output, or computed from constants
    only (e.g. a transposed weight).
    """
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    const = {i.name for i in model.graph.initializer}
    for n in model.graph.node:  # nodes are topologically sorted in a valid ONNX graph
        if n.op_type == "Constant" or (n.input and all(i in const for i in n.input if i)):
            const.update(n.output)
    return [
        n.name for n in model.graph.node if n.op_type == "MatMul" and not any(i in const for i in n.input)
    ]


def quantize_int8(
    onnx_in: str | Path,
    onnx_out: str | Path,
    calibration: Iterable[Feeds],
    *,
    op_types: Sequence[str] = QUANT_OP_TYPES,
    per_channel: bool = True,
    calibrate_method: str = "minmax",
    pre_process: bool = True,
    quantize_bias: bool = False,
    lint: bool = True,
    nodes_to_exclude: Sequence[str] = (),
    weight_matmuls_only: bool = True,
) -> QuantizeReport:
    """Static INT8 with explicit Q/DQ nodes: ``onnx_in`` (fp32) → ``onnx_out`` (written atomically).

    Args:
        onnx_in: an fp32 model (single file).
        onnx_out: destination ``.onnx``.
        calibration: feeds dicts (input name → float32 array, preprocessed exactly like inference).
        op_types: node types whose inputs are quantized (default Conv/MatMul/Gemm).
        per_channel: per-output-channel weight scales.
        calibrate_method: ``minmax`` | ``entropy`` | ``percentile``.
        pre_process: run ``quant_pre_process`` first (recommended by onnxruntime).
        quantize_bias: store biases as INT32 behind a DequantizeLinear (onnxruntime's default; TensorRT
            rejects it, so off here; on only to reproduce what the lint refuses).
        lint: refuse a graph TensorRT cannot consume (:func:`~.qdq_lint.lint_qdq`) before it is written.
        nodes_to_exclude: node names left in float.
        weight_matmuls_only: quantize only MatMuls whose B is a constant (the Linear layers); the
            activation × activation MatMuls of attention stay float (see the module docstring).
    Raises:
        ConfigError: unknown calibration method.
        ExportFailedError: no calibration data, or quantization failed.
        QdqLintError: the quantized graph holds nodes TensorRT cannot consume (nothing is written).
    """
    if calibrate_method not in CALIBRATE_METHODS:
        raise ConfigError(
            "deploy.calibrate_method", calibrate_method, "unknown method", valid=", ".join(CALIBRATE_METHODS)
        )
    q = _quantization()
    method = {
        "minmax": q.CalibrationMethod.MinMax,
        "entropy": q.CalibrationMethod.Entropy,
        "percentile": q.CalibrationMethod.Percentile,
    }[calibrate_method]
    reader = _as_reader(calibration)
    src = Path(onnx_in)
    with tempfile.TemporaryDirectory(prefix=".quantize.") as tmp:
        pre = Path(tmp) / "pre.onnx"
        how = _pre_process(src, pre) if pre_process else "off"
        model_in = pre if how in ("symbolic", "skip_symbolic_shape") else src
        excluded = list(nodes_to_exclude) + (activation_matmuls(model_in) if weight_matmuls_only else [])
        with atomic_path(onnx_out) as out, warnings.catch_warnings():
            warnings.simplefilter("ignore")
            level = logging.getLogger().level
            logging.getLogger().setLevel(logging.ERROR)  # onnxruntime logs a line per skipped node
            try:
                q.quantize_static(
                    str(model_in),
                    str(out),
                    reader,
                    quant_format=q.QuantFormat.QDQ,
                    op_types_to_quantize=list(op_types),
                    nodes_to_exclude=excluded,
                    per_channel=per_channel,
                    activation_type=q.QuantType.QInt8,
                    weight_type=q.QuantType.QInt8,
                    calibrate_method=method,
                    extra_options={
                        "ActivationSymmetric": True,
                        "WeightSymmetric": True,
                        "QuantizeBias": quantize_bias,
                    },
                )
            except Exception as e:
                raise ExportFailedError(
                    src.name, "onnxruntime quantize_static", f"{type(e).__name__}: {str(e)[:300]}"
                ) from e
            finally:
                logging.getLogger().setLevel(level)
            batches = reader.inner.count
            if batches == 0:
                raise ExportFailedError(src.name, "INT8 calibration", "the calibration data was empty")
            qdq = count_qdq(out)
            if lint:
                lint_qdq(out)
    return QuantizeReport(
        "static QDQ (onnxruntime.quantization)",
        list(op_types),
        per_channel,
        "int8 (symmetric)",
        "int8 (symmetric)",
        True,
        calibrate_method,
        batches,
        how,
        qdq,
        quantize_bias,
        weight_matmuls_only,
    )
