"""Precision lives in the ONNX graph: one ``<name>.<precision>.onnx`` per reduced precision, run as is
by onnxruntime CPU, onnxruntime CUDA and TensorRT (strongly typed: TensorRT takes each tensor's type
from the graph, so no builder precision flags are needed or, on TensorRT 11, possible).

- **fp32**: the exported artifact itself (its sidecar's ``precision`` is ``"fp32"``; a sidecar without
  the field is read as fp32).
- **fp16 / bf16**: mixed precision by NVIDIA ModelOpt's ONNX AutoCast (:mod:`.mixed_precision`):
  normalisation, reductions, and the ops of decomposed norms and of positional encodings stay fp32;
  Softmax computes in fp16 / bf16 (TensorRT's attention fusion); graph I/O stays fp32.
- **int8**: static QDQ from onnxruntime's ``quantize_static`` with ``QuantizeBias: False``
  (:mod:`.int8`), refused by :func:`lint_qdq` when TensorRT could not parse it. Attention matmuls stay
  float, and :data:`INT8_OP_TYPES` narrows the quantized op types of the specs where the default cost
  label accuracy (measured, see the figures there). onnxruntime's tool on the fp32 graph by default
  (``int8_base="fp32"``): it runs and calibrates on this CPU, is already a dependency, its QDQ output
  passes the lint, and it is what onnxruntime CPU runs best. For TensorRT (``build``, whose default is
  ``int8_base="fp16"``) the QDQ sits on the fp16 AutoCast graph instead (:mod:`.int8_fp16`, ModelOpt),
  so the layers left unquantized run fp16, not fp32.

The shared parts (sidecar, validation, reuse) are in :mod:`.derived`.

The sidecar records ``precision``, ``precision_tool``, ``precision_tool_version``,
``precision_source_sha256`` (the fp32 artifact it came from) and ``validation`` (cosine and max abs of
every output against the fp32 ONNX on onnxruntime CPU, worst over the validation feeds).

**Why ModelOpt AutoCast, not onnxconverter-common + a block list** (the same block list for both;
the toy SAM/CLIP and the tiny segmenter exported by our specs; onnxruntime 1.32 CPU; figures
are worst cosine vs fp32 PyTorch over the spec's validation inputs, conversion seconds, nodes in fp16 /
compute nodes, Cast nodes):

| artifact | onnxconverter-common 1.16 | ModelOpt AutoCast 0.47 |
|---|---|---|
| sam_encoder | 1 − 9e-10, 0.12 s, 188/208, 56 casts | 1 − 9e-10, 2.0 s, 188/208, 38 casts |
| sam_decoder_batched | **invalid** (onnxruntime: Cast type mismatch) | 1 − 1.1e-7, 5.1 s, 272/877 |
| clip_text | 1 − 1.4e-8, 0.10 s, 136/173, 37 casts | 1 − 1.4e-8, 1.4 s, 136/173, 23 casts |
| segmenter | 1 − 5.7e-8, 0.07 s, 60/91, 12 casts | 1 − 3.6e-8, 0.8 s, 63/91, 4 casts |
| bf16 | not supported | supported (opset 22) |

Fidelity is the same where both work; onnxconverter-common breaks the batched SAM decoder, cannot
make bf16 and leaves more Casts; AutoCast is NVIDIA's tool for TensorRT's strongly typed builds. Its
cost: seconds per conversion and an optional install (``[precision]`` extra, without ModelOpt's own
``[onnx]`` extra, which would replace onnxruntime and downgrade onnx).

**What runs where.** fp16 artifacts run on onnxruntime CPU and CUDA and on TensorRT. onnxruntime 1.32's
CPU provider crashes (SIGSEGV while building the session) on an fp16 ViT at graph optimisation
``all`` (``MatmulTransposeFusion`` with ``NchwcTransformer``); at ``extended`` it runs, so the sidecar
records ``onnxruntime_cpu_optimization: "extended"`` for fp16/bf16. bf16 artifacts are for TensorRT and
onnxruntime CUDA: onnxruntime's CPU provider has no bf16 Conv/MatMul kernels (NOT_IMPLEMENTED), so
their validation is recorded as skipped with that reason.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from zsplg_fast.errors import ConfigError
from zsplg_fast.export.artifact import Artifact, files_sha256
from zsplg_fast.export.derived import (
    ORT_CPU_OPTIMIZATION,
    copy_unquantized,
    probe_feeds,
    reuse_derived,
    validate_derived,
    write_derived_sidecar,
)
from zsplg_fast.export.int8 import (
    CALIBRATE_METHODS,
    QUANT_OP_TYPES,
    FeedsReader,
    QuantizeReport,
    _publish,
    count_qdq,
    quantize_int8,
)
from zsplg_fast.export.int8_ops import INT8_CPU_OP_TYPES, INT8_OP_TYPES, SEGMENTER_INT8_OPS, int8_op_types
from zsplg_fast.export.mixed_precision import FP32_OPS, convert_mixed
from zsplg_fast.export.qdq_lint import lint_qdq, qdq_problems

__all__ = [
    "CALIBRATE_METHODS",
    "FP32_OPS",
    "INT8_CPU_OP_TYPES",
    "INT8_OP_TYPES",
    "ORT_CPU_OPTIMIZATION",
    "PRECISIONS",
    "QUANT_OP_TYPES",
    "SEGMENTER_INT8_OPS",
    "FeedsReader",
    "QuantizeReport",
    "convert_fp16",
    "count_qdq",
    "int8_op_types",
    "lint_qdq",
    "precision_artifact",
    "precision_of",
    "precision_path",
    "probe_feeds",
    "qdq_problems",
    "quantize_int8",
    "write_derived_sidecar",
]

PRECISIONS = ("fp32", "fp16", "bf16", "int8")
INT8_TOOL = "onnxruntime.quantization.quantize_static (QDQ, QuantizeBias=False)"
INT8_FP16_TOOL = "nvidia-modelopt onnx.quantization (int8 QDQ, fp16 base)"
INT8_BASES = ("fp32", "fp16")


Feeds = Mapping[str, np.ndarray]


def precision_of(sidecar: Mapping[str, Any]) -> str:
    """The precision an ONNX sidecar declares; ``"fp32"`` when the field is absent (older exports)."""
    return str(sidecar.get("precision", "fp32"))


def precision_path(onnx_path: str | Path, precision: str) -> Path:
    """``export/x.onnx`` → ``export/x.<precision>.onnx`` (fp32: the path itself)."""
    p = Path(onnx_path)
    return p if precision == "fp32" else p.with_name(f"{p.stem}.{precision}.onnx")


def convert_fp16(onnx_in: str | Path, onnx_out: str | Path, keep_io_types: bool = True) -> dict[str, Any]:
    """fp32 ONNX → mixed fp16 ONNX (ModelOpt AutoCast, :data:`FP32_OPS` kept fp32, I/O fp32); atomic.

    ``keep_io_types`` must stay True (callers feed and read float32). Returns the conversion record.
    Raises:
        MissingDependencyError: nvidia-modelopt is not installed.
    """
    if not keep_io_types:
        raise ConfigError("keep_io_types", keep_io_types, "fp16 artifacts keep float32 inputs and outputs")
    return {"method": "nvidia-modelopt onnx.autocast", **convert_mixed(onnx_in, onnx_out, "fp16")}


def precision_artifact(
    onnx_path: str | Path,
    precision: str,
    *,
    calibration: Iterable[dict[str, np.ndarray]] | None = None,
    calibration_record: Mapping[str, Any] | None = None,
    int8_base: str = "fp32",
    force: bool = False,
) -> Artifact:
    """The ``precision`` ONNX of an exported fp32 artifact, written beside it once and reused after.

    Args:
        onnx_path: an fp32 artifact (``export/<name>.onnx`` with its sidecar).
        precision: ``fp32`` (the artifact unchanged) | ``fp16`` | ``bf16`` | ``int8``.
        calibration: int8 only: feeds dicts (input name → float32 array, preprocessed exactly as at
            inference time), e.g. ``{"image": (1, 3, 1024, 1024) float32}`` per image.
        calibration_record: what the feeds were made from (source, split, images), written to the
            sidecar's ``calibration`` with the number of feeds used.
        int8_base: ``fp32`` (onnxruntime QDQ on the fp32 graph: what onnxruntime CPU runs best) |
            ``fp16`` (QDQ on the fp16 graph by ModelOpt, for TensorRT: :mod:`.int8_fp16`).
        force: replace an existing ``<name>.<precision>.onnx`` made from another source or tool.
    Returns:
        The :class:`Artifact` ``<name>.<precision>.onnx`` whose sidecar has ``precision``,
        ``precision_tool``, ``precision_tool_version``, ``precision_source_sha256``, ``precision_settings``,
        ``validation`` and ``onnxruntime_cpu_optimization``.
    Raises:
        ConfigError: unknown precision, a source that is not fp32, or int8 without calibration.
        OutputExistsError: a different ``<name>.<precision>.onnx`` exists and ``force`` is false.
        MissingDependencyError: fp16/bf16 without nvidia-modelopt.
        QdqLintError: the int8 graph holds nodes TensorRT cannot consume.
    """
    if precision not in PRECISIONS:
        raise ConfigError("precision", precision, "unknown precision", valid=", ".join(PRECISIONS))
    src = Artifact.open(onnx_path)
    if precision_of(src.sidecar) != "fp32":
        raise ConfigError(
            "precision", str(src.path), f"the source must be an fp32 export, not {precision_of(src.sidecar)}"
        )
    if precision == "fp32":
        return src
    src_sha = files_sha256(src.files[:-1])
    dst = precision_path(src.path, precision)
    if precision == "int8" and int8_base not in INT8_BASES:
        raise ConfigError("export.int8_base", int8_base, "unknown int8 base", valid=", ".join(INT8_BASES))
    fp16_base = precision == "int8" and int8_base == "fp16"
    if fp16_base:
        from zsplg_fast.export.mixed_precision import modelopt_version

        tool, tool_version = INT8_FP16_TOOL, modelopt_version()
    elif precision == "int8":
        from onnxruntime import __version__ as tool_version

        tool = INT8_TOOL
    else:
        from zsplg_fast.export.mixed_precision import modelopt_version

        tool, tool_version = "nvidia-modelopt onnx.autocast", modelopt_version()
    ops = int8_op_types(src.sidecar.get("spec"))
    wanted = {"op_types": list(ops)} if precision == "int8" else {"keep_fp32_ops": list(FP32_OPS)}
    if fp16_base:
        wanted["base"] = "fp16"
    reused = reuse_derived(dst, src_sha, tool, wanted, force)
    if reused is not None:
        return reused
    calib = list(calibration) if calibration is not None else []
    if precision == "int8" and not calib and ops:
        raise ConfigError("calibration", None, "int8 needs calibration feeds (preprocessed images)")
    feeds = [probe_feeds(src, seed) for seed in (0, 1)] + calib[:1]
    t0 = time.perf_counter()
    tmpdir = Path(tempfile.mkdtemp(prefix=f".{dst.stem}.", suffix=".partial", dir=src.path.parent))
    try:
        tmp = tmpdir / dst.name
        if fp16_base and not ops:  # nothing to quantize: the fp16 graph
            settings: dict[str, Any] = {
                **convert_mixed(src.path, tmp, "fp16"),
                "base": "fp16",
                "qdq_nodes": 0,
            }
        elif fp16_base:
            from zsplg_fast.export.int8_fp16 import quantize_int8_fp16

            settings = quantize_int8_fp16(src.path, tmp, calib, op_types=ops)
        elif precision == "int8" and not ops:  # nothing to quantize (e.g. preprocessing): the fp32 graph
            settings = copy_unquantized(src.path, tmp, len(calib))
        elif precision == "int8":
            settings = quantize_int8(src.path, tmp, calib, op_types=ops).to_dict()
        else:
            settings = convert_mixed(src.path, tmp, precision)
        seconds = round(time.perf_counter() - t0, 2)
        # fp16-base int8: onnxruntime's QDQ fusions (extended, all) refuse fp16 scales ("Type
        # 'tensor(float16)' of input parameter ... of operator (QLinearConcat)"): basic level on the CPU
        level = "basic" if fp16_base else ORT_CPU_OPTIMIZATION[precision]
        validation = validate_derived(src.path, tmp, precision, feeds, level)
        _publish(tmp, dst)  # with its external data (vit_h)
        record = write_derived_sidecar(
            src.path,
            dst,
            precision,
            {
                "precision_tool": tool,
                "precision_tool_version": tool_version,
                "precision_source_sha256": src_sha,
                "precision_settings": settings,
                "precision_time_s": seconds,
                "validation": validation,
                "onnxruntime_cpu_optimization": level,
                **(
                    {"calibration": {**dict(calibration_record or {}), "feeds_used": len(calib)}}
                    if precision == "int8"
                    else {}
                ),
            },
        )
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)
    return Artifact(dst, record)
