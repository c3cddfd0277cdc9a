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
  which way it went;
- external data: a source whose weights live in ``<name>.onnx.data`` (vit_h: over protobuf's 2 GB) gives
  external-data intermediate and output models too (``quant_pre_process(save_as_external_data=True)``,
  ``quantize_static(use_external_data_format=True)``); the output is ``<out>.onnx`` + ``<out>.onnx.data``.

**Targets** (:data:`INT8_TARGETS`). ``tensorrt`` (the default, what ``build`` and the QDQ lint need):
symmetric int8 activations, zero point 0. ``cpu``: asymmetric *uint8* activations (onnxruntime's U8S8,
the layout its x86 VNNI kernels are made for) with the same per-channel symmetric int8 weights. On the
CPU the symmetric form is slower than fp32 on a ResNet-101 DeepLabV3+ (the zero-centred range cannot
absorb the ReLU after a Conv, so onnxruntime keeps float ReLUs between its NHWC ``QLinearConv`` and
inserts layout Transposes around each), while U8S8 folds ReLU into the quantization range and runs the
CNN in int8 end to end (bench/results/deploy_cpu_real: see the README's "Edge" figures). TensorRT
rejects uint8 / non-zero zero points, so a ``cpu`` artifact is not linted and is not for ``build``.
After ``quantize_static`` the ``cpu`` form goes through :mod:`.int8_cpu`'s integer passes (the pooling
mean as ``QLinearGlobalAveragePool``, bilinear Resizes on uint8, shapes read from the uint8 tensors), so
that no float op is left between the convs; the report's ``integer_passes`` counts what they rewrote.
Before ``quantize_static`` (after ``quant_pre_process``) the ``cpu`` form's fp32 graph goes through
:mod:`.int8_dilated`: the ASPP's dilated 3×3 convs are split into one 1×1 conv per tap, so the
integer conv never multiplies the zero padding those taps mostly read (``float_passes`` in the report).

**7-bit weights** (``reduce_range``, both targets). onnxruntime's x86 integer kernels without VNNI (AVX2,
as on this project's CI machine) multiply u8 × s8 pairs with ``vpmaddubsw``, whose int16 pair sums
saturate for full-range int8 weights; the onnxruntime quantization docs' remedy is ``reduce_range``
(weights in [-64, 63]). Measured on an AVX2-only EPYC, onnxruntime graph level ``all`` (where it fuses
QDQ into integer kernels), the test block of tests/export/test_precision_mixed.py: worst cosine against
fp32 0.9646 with 8-bit weights, 0.9992 with 7-bit (the toy label floor: 16.9 mIoU points lost, see
bench/results/precision_fidelity). VNNI / AMX CPUs and TensorRT compute exactly either way, so the
cost there is one bit of per-channel weight resolution.
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
from zsplg_fast.export.int8_cpu import float_passes_on_file, integer_passes_on_file
from zsplg_fast.export.qdq_lint import lint_qdq

QUANT_OP_TYPES: tuple[str, ...] = ("Conv", "MatMul", "Gemm")
CALIBRATE_METHODS = ("minmax", "entropy", "percentile")
INT8_TARGETS: dict[str, dict[str, Any]] = {
    # activation type name, symmetric activations, QDQ lint (TensorRT's rules)
    "tensorrt": {
        "activation": "QInt8",
        "symmetric": True,
        "lint": True,
        "reduce_range": True,
        "passes": False,
        "float_passes": False,
    },
    # passes: export/int8_cpu.py's integer passes (mean -> QLinearGlobalAveragePool, uint8 Resize/Pad);
    # float_passes: export/int8_dilated.py's split of dilated convs, before quantize_static
    "cpu": {
        "activation": "QUInt8",
        "symmetric": False,
        "lint": False,
        "reduce_range": True,
        "passes": True,
        "float_passes": True,
    },
}
EXTERNAL_DATA_BYTES = 1_800_000_000  # a model file this large goes to external data (protobuf: 2 GB)
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
    target: str = "tensorrt"
    external_data: bool = False
    reduce_range: bool = True  # 7-bit weights: no int16 saturation on AVX2 without VNNI (module docstring)
    integer_passes: dict[str, int] | None = None  # cpu target: export/int8_cpu.py pass -> nodes rewritten
    float_passes: dict[str, int] | None = None  # cpu target: export/int8_dilated.py pass -> nodes rewritten

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


def uses_external_data(path: str | Path) -> bool:
    """True when an ONNX file keeps any initializer in external data (or is too large for one file)."""
    import onnx
    from onnx.external_data_helper import uses_external_data as external

    p = Path(path)
    if p.stat().st_size > EXTERNAL_DATA_BYTES:
        return True
    model = onnx.load(str(p), load_external_data=False)
    return any(external(t) for t in model.graph.initializer)


def _pre_process(src: Path, dst: Path, external: bool = False) -> str:
    """``quant_pre_process`` (optimisation + shape inference); retried without symbolic shapes.
    ``external``: write ``dst`` with its weights in ``<dst>.data`` (sources over 2 GB)."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    ext: dict[str, Any] = {}
    if external:
        ext = {
            "save_as_external_data": True,
            "all_tensors_to_one_file": True,
            "external_data_location": dst.name + ".data",
        }
    first = ""
    src, dst = src.resolve(), dst.resolve()  # before the chdir below: relative paths would move with it
    for skip in (False, True):
        try:  # symbolic shape inference drops temp files into the cwd: run it in dst's folder
            with contextlib.redirect_stdout(io.StringIO()), _cwd(dst.parent):
                quant_pre_process(str(src), str(dst), skip_symbolic_shape=skip, **ext)
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


def _publish(tmp: Path, dst: Path) -> None:
    """Move a model written in a temp folder (``tmp`` + its ``.data``, named as ``dst``) into place:
    the data file first, so ``dst`` never points at missing weights; a stale ``dst.data`` is removed."""
    data, dst_data = tmp.with_name(tmp.name + ".data"), dst.with_name(dst.name + ".data")
    if data.exists():
        os.replace(data, dst_data)
    elif dst_data.exists():
        dst_data.unlink()
    os.replace(tmp, dst)


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
    lint: bool | None = None,
    nodes_to_exclude: Sequence[str] = (),
    weight_matmuls_only: bool = True,
    target: str = "tensorrt",
    external_data: bool | None = None,
) -> QuantizeReport:
    """Static INT8 with explicit Q/DQ nodes: ``onnx_in`` (fp32) → ``onnx_out`` (written atomically).

    Args:
        onnx_in: an fp32 model (its external data, if any, beside it).
        onnx_out: destination ``.onnx`` (+ ``.onnx.data`` with external data).
        calibration: feeds dicts (input name → float32 array, preprocessed exactly like inference).
        op_types: node types whose inputs are quantized (default Conv/MatMul/Gemm).
        per_channel: per-output-channel weight scales.
        calibrate_method: ``minmax`` | ``entropy`` | ``percentile``.
        pre_process: run ``quant_pre_process`` first (recommended by onnxruntime).
        quantize_bias: store biases as INT32 behind a DequantizeLinear (onnxruntime's default; TensorRT
            rejects it, so off here; on only to reproduce what the lint refuses).
        lint: refuse a graph TensorRT cannot consume (:func:`~.qdq_lint.lint_qdq`) before it is
            written; None = the target's rule (on for ``tensorrt``, off for ``cpu``).
        nodes_to_exclude: node names left in float.
        weight_matmuls_only: quantize only MatMuls whose B is a constant (the Linear layers); the
            activation × activation MatMuls of attention stay float (see the module docstring).
        target: ``tensorrt`` (symmetric int8 activations) | ``cpu`` (asymmetric uint8 activations,
            onnxruntime's fast CPU form), see :data:`INT8_TARGETS`.
        external_data: write the pre-processed and the output model with external data; None = when
            the source uses external data or is over ~1.8 GB (vit_h).
    Raises:
        ConfigError: unknown calibration method or target.
        ExportFailedError: no calibration data, or quantization failed.
        QdqLintError: the quantized graph holds nodes TensorRT cannot consume (nothing is written).
    """
    if calibrate_method not in CALIBRATE_METHODS:
        raise ConfigError(
            "deploy.calibrate_method", calibrate_method, "unknown method", valid=", ".join(CALIBRATE_METHODS)
        )
    if target not in INT8_TARGETS:
        raise ConfigError("int8_target", target, "unknown int8 target", valid=", ".join(INT8_TARGETS))
    rule = INT8_TARGETS[target]
    lint = rule["lint"] if lint is None else lint
    q = _quantization()
    method = {
        "minmax": q.CalibrationMethod.MinMax,
        "entropy": q.CalibrationMethod.Entropy,
        "percentile": q.CalibrationMethod.Percentile,
    }[calibrate_method]
    reader = _as_reader(calibration)
    src, dst = Path(onnx_in), Path(onnx_out)
    external = uses_external_data(src) if external_data is None else bool(external_data)
    dst.parent.mkdir(parents=True, exist_ok=True)
    with (
        tempfile.TemporaryDirectory(prefix=".quantize.") as tmp,
        tempfile.TemporaryDirectory(prefix=f".{dst.name}.", suffix=".partial", dir=dst.parent) as part,
    ):
        pre = Path(tmp) / "pre.onnx"
        how = _pre_process(src, pre, external) if pre_process else "off"
        model_in = pre if how in ("symbolic", "skip_symbolic_shape") else src
        float_passes = None
        if rule["float_passes"]:
            model_in, float_passes = float_passes_on_file(model_in, Path(tmp) / "split.onnx", external)
        excluded = list(nodes_to_exclude) + (activation_matmuls(model_in) if weight_matmuls_only else [])
        out = Path(part) / dst.name  # named as the destination: external data keeps its location name
        with warnings.catch_warnings():
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
                    activation_type=getattr(q.QuantType, rule["activation"]),
                    weight_type=q.QuantType.QInt8,
                    reduce_range=bool(rule["reduce_range"]),
                    calibrate_method=method,
                    use_external_data_format=external,
                    extra_options={
                        "ActivationSymmetric": rule["symmetric"],
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
        passes = integer_passes_on_file(out, external) if rule["passes"] else None
        qdq = count_qdq(out)
        if lint:
            lint_qdq(out)
        _publish(out, dst)
    return QuantizeReport(
        "static QDQ (onnxruntime.quantization)",
        list(op_types),
        per_channel,
        f"{rule['activation'].lower().removeprefix('q')} ({'' if rule['symmetric'] else 'a'}symmetric)",
        "int8 (symmetric)",
        bool(rule["symmetric"]),
        calibrate_method,
        batches,
        how,
        qdq,
        quantize_bias,
        weight_matmuls_only,
        target,
        external,
        bool(rule["reduce_range"]),
        passes,
        float_passes,
    )
