"""Build TensorRT 10 plans from exported ONNX artifacts (``zsplg-fast build``).

Follows the TensorRT 10 Python API: ``Builder`` → ``create_network(0)`` (explicit batch) →
``OnnxParser.parse_from_file`` (every ``get_error(i)`` surfaced) → ``IBuilderConfig`` with
``set_memory_pool_limit(MemoryPoolType.WORKSPACE)``, precision ``BuilderFlag``s, one
``IOptimizationProfile`` built from the spec's symbolic axes, a persisted ``ITimingCache`` and
optionally ``VERSION_COMPATIBLE`` → ``build_serialized_network``.

- fp16 / bf16 pin LayerNormalization (NORMALIZATION layers) and Softmax to fp32 with
  ``OBEY_PRECISION_CONSTRAINTS``;
- int8 takes explicit-QDQ ONNX only (onnxruntime.quantization ``quantize_static`` with QDQ format):
  implicit calibration is deprecated in TensorRT 10;
- a cache key (ONNX sha256, precision, profile shapes, flags, TensorRT version, GPU) lets an identical
  request reuse the plan instead of rebuilding.

Everything that does not need TensorRT (profile planning, cache key, QDQ detection) is plain Python.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from zsplg_fast.config.export import PRECISIONS
from zsplg_fast.errors import ConfigError, ExportFailedError
from zsplg_fast.export.artifact import SIDECAR_VERSION, Artifact, read_sidecar, sidecar_path
from zsplg_fast.export.tensors import AxisRange, TensorSpec
from zsplg_fast.export.trt_info import RuntimeInfo, require_tensorrt, runtime_info
from zsplg_fast.utils.io import atomic_write_bytes, atomic_write_json
from zsplg_fast.utils.outdir import check_writable, refuse_foreign_file

Shapes = dict[str, tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]]
FP32_PINNED_LAYERS = ("NORMALIZATION", "SOFTMAX")


def plan_profiles(inputs: Sequence[TensorSpec], ranges: Mapping[str, AxisRange]) -> Shapes:
    """min/opt/max shapes per input from its symbolic axes.

    Args:
        inputs: the artifact's inputs (fixed ints and symbolic axis names).
        ranges: axis name → min/opt/max (sidecar defaults ← config ← CLI).
    Returns:
        input name → (min shape, opt shape, max shape); inputs without dynamic axes included.
    Raises:
        ConfigError: a dynamic axis without a range, naming the axis and the input.
    """
    out: Shapes = {}
    for s in inputs:
        lo, mid, hi = [], [], []
        for d in s.shape:
            if isinstance(d, int):
                lo.append(d), mid.append(d), hi.append(d)
                continue
            if d not in ranges:
                raise ConfigError(
                    "export.profiles",
                    d,
                    f"dynamic axis '{d}' of input '{s.name}' has no profile",
                    valid=f"add --profile {d}=MIN:OPT:MAX",
                )
            r = ranges[d]
            lo.append(r.min), mid.append(r.opt), hi.append(r.max)
        out[s.name] = (tuple(lo), tuple(mid), tuple(hi))
    return out


def resolve_ranges(
    sidecar: Mapping[str, Any], overrides: Mapping[str, AxisRange] | None = None
) -> dict[str, AxisRange]:
    """Axis ranges: the sidecar's spec defaults, overridden by config/CLI ``overrides``."""
    ranges = {k: AxisRange(*v) for k, v in sidecar.get("profiles", {}).items()}
    ranges.update(overrides or {})
    return ranges


def cache_key(
    onnx_sha256: str,
    precision: str,
    shapes: Shapes,
    runtime: RuntimeInfo,
    workspace_bytes: int,
    version_compatible: bool,
    optimization_level: int,
) -> str:
    """Stable 16-hex key of everything that changes the plan; equal keys → reuse the plan."""
    blob = json.dumps(
        {
            "onnx": onnx_sha256,
            "precision": precision,
            "shapes": {k: [list(s) for s in v] for k, v in sorted(shapes.items())},
            "tensorrt": runtime.tensorrt,
            "gpu": runtime.gpu,
            "cc": runtime.compute_capability,
            "workspace": workspace_bytes,
            "vc": version_compatible,
            "opt": optimization_level,
        },
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def has_qdq(onnx_path: str | Path) -> bool:
    """True when the ONNX graph has QuantizeLinear/DequantizeLinear nodes (explicit quantization)."""
    import onnx

    model = onnx.load(str(onnx_path), load_external_data=False)
    return any(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in model.graph.node)


def plan_path(out_dir: str | Path, name: str, precision: str) -> Path:
    """``engines/<name>.<precision>.plan``."""
    return Path(out_dir) / f"{name}.{precision}.plan"


def _pin_fp32(trt: Any, network: Any) -> int:
    """Pin normalisation and softmax layers (and their outputs) to fp32. Returns how many."""
    kinds = {getattr(trt.LayerType, k) for k in FP32_PINNED_LAYERS}
    n = 0
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        if layer.type in kinds:
            layer.precision = trt.float32
            for j in range(layer.num_outputs):
                layer.set_output_type(j, trt.float32)
            n += 1
    return n


def _half(flag: str) -> Callable[[Any, Any, Any], int]:
    def apply(trt: Any, config: Any, network: Any) -> int:
        config.set_flag(getattr(trt.BuilderFlag, flag))
        config.set_flag(trt.BuilderFlag.OBEY_PRECISION_CONSTRAINTS)
        return _pin_fp32(trt, network)

    return apply


def _int8(trt: Any, config: Any, network: Any) -> int:
    config.set_flag(trt.BuilderFlag.INT8)  # explicit Q/DQ scales; no calibrator
    config.set_flag(trt.BuilderFlag.FP16)  # layers outside Q/DQ pairs may run in fp16
    return 0


PRECISION_FLAGS: dict[str, Callable[[Any, Any, Any], int]] = {
    "fp32": lambda trt, config, network: 0,
    "fp16": _half("FP16"),
    "bf16": _half("BF16"),
    "int8": _int8,
}


def _parse(trt: Any, logger: Any, onnx_path: Path, name: str) -> tuple[Any, Any, Any]:
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = []
        for i in range(parser.num_errors):
            e = parser.get_error(i)
            errors.append(f"[{e.code()}] node {e.node()}: {e.desc()}")
        raise ExportFailedError(name, "TensorRT ONNX parser", " | ".join(errors) or "unknown parser error")
    return builder, network, parser


def build_engine(
    onnx_path: str | Path,
    out_dir: str | Path = "engines",
    *,
    precision: str = "fp16",
    profiles: Mapping[str, AxisRange] | None = None,
    workspace_gib: float = 4.0,
    timing_cache: str | Path | None = "engines/timing.cache",
    version_compatible: bool = False,
    optimization_level: int = 3,
    force: bool = False,
) -> tuple[Artifact, bool]:
    """Build (or reuse) ``out_dir/<name>.<precision>.plan`` from an exported ONNX artifact.

    Returns:
        (the plan artifact, True if an identical cached plan was reused).
    Raises:
        ConfigError: unknown precision, a dynamic axis without a profile, int8 without Q/DQ nodes.
        MissingDependencyError: tensorrt or a CUDA GPU is missing.
        ExportFailedError: parser errors (all of them) or a failed build.
        OutputExistsError: a different plan of the same name exists and ``force`` is false.
    """
    if precision not in PRECISION_FLAGS:
        raise ConfigError("export.precision", precision, "unknown precision", valid=", ".join(PRECISIONS))
    onnx_path = Path(onnx_path)
    side = read_sidecar(onnx_path)
    name = str(side.get("name", onnx_path.stem))
    early = plan_path(out_dir, name, precision)  # a file not ours is refused before TensorRT is needed
    refuse_foreign_file((early, sidecar_path(early)), sidecar_path(early), True)
    check_writable(out_dir)
    inputs = [TensorSpec.from_dict(d) for d in side["inputs"]]
    shapes = plan_profiles(inputs, resolve_ranges(side, profiles))
    if precision == "int8" and not has_qdq(onnx_path):
        raise ConfigError(
            "export.precision",
            "int8",
            f"{onnx_path.name} has no QuantizeLinear/DequantizeLinear nodes; TensorRT 10 int8 takes "
            "explicit-QDQ models (onnxruntime.quantization.quantize_static, QuantFormat.QDQ)",
            valid="fp32, fp16, bf16",
        )
    trt = require_tensorrt("building TensorRT engines")
    running = runtime_info()
    workspace = int(workspace_gib * (1 << 30))
    key = cache_key(
        str(side["sha256"]), precision, shapes, running, workspace, version_compatible, optimization_level
    )
    plan = plan_path(out_dir, name, precision)
    plan_side = sidecar_path(plan)
    if plan.is_file() and plan_side.is_file() and read_sidecar(plan).get("cache_key") == key:
        return Artifact(plan, read_sidecar(plan)), True
    refuse_foreign_file((plan, plan_side), plan_side, force)
    t0 = time.perf_counter()
    logger = trt.Logger(trt.Logger.WARNING)
    builder, network, _parser = _parse(trt, logger, onnx_path, name)
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace)
    config.builder_optimization_level = optimization_level
    pinned = PRECISION_FLAGS[precision](trt, config, network)
    if version_compatible:
        config.set_flag(trt.BuilderFlag.VERSION_COMPATIBLE)
    profile = builder.create_optimization_profile()
    for input_name, (lo, mid, hi) in shapes.items():
        profile.set_shape(input_name, lo, mid, hi)
    config.add_optimization_profile(profile)
    cache_file = Path(timing_cache) if timing_cache else None
    blob = cache_file.read_bytes() if cache_file and cache_file.is_file() else b""
    config.set_timing_cache(config.create_timing_cache(blob), False)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise ExportFailedError(
            name, "TensorRT build", "build_serialized_network returned None (see the log above)"
        )
    if cache_file:
        atomic_write_bytes(cache_file, bytes(config.get_timing_cache().serialize()))
    atomic_write_bytes(plan, bytes(serialized))
    rebuild = f"zsplg-fast build {onnx_path} --precision {precision} --out {Path(out_dir)} --force" + "".join(
        f" --profile {k}={v.min}:{v.opt}:{v.max}" for k, v in (profiles or {}).items()
    )
    record = {
        "sidecar_version": SIDECAR_VERSION,
        "kind": "tensorrt",
        "name": name,
        "spec": side.get("spec"),
        "precision": precision,
        "inputs": side["inputs"],
        "outputs": side["outputs"],
        "tensorrt": running.tensorrt,
        "gpu": running.gpu,
        "compute_capability": running.compute_capability,
        "version_compatible": version_compatible,
        "onnx": {"path": str(onnx_path), "sha256": side["sha256"]},
        "profiles": {k: [list(s) for s in v] for k, v in shapes.items()},
        "workspace_bytes": workspace,
        "optimization_level": optimization_level,
        "fp32_pinned_layers": pinned,
        "cache_key": key,
        "rebuild_command": rebuild,
        "build_time_s": round(time.perf_counter() - t0, 1),
        "size_bytes": plan.stat().st_size,
        **{k: side[k] for k in ("preprocessing", "class_names", "palette") if k in side},
    }
    atomic_write_json(plan_side, record)
    return Artifact(plan, record), False
