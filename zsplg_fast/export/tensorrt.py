"""Build strongly typed TensorRT plans from exported ONNX artifacts (``zsplg-fast build``).

TensorRT 10.12 deprecated the precision builder flags ("superseded by strong typing") and TensorRT 11
removed them (``BuilderFlag.FP16/BF16/INT8/FP8``, ``OBEY/PREFER_PRECISION_CONSTRAINTS``,
``ILayer.precision``, ``ILayer.set_output_type``). So every plan here is **strongly typed**: the
tensor types of the ONNX graph are the plan's types, and the precision of a plan is the precision of
the ONNX it is built from (``<name>.fp16.onnx``, ``<name>.int8.onnx`` with explicit Q/DQ, made by
:func:`zsplg_fast.export.precision.precision_artifact`). :func:`build_engine` reads the ONNX sidecar's
``precision`` and refuses a request that differs (the CLI ``build`` makes the precision ONNX first).

Follows the TensorRT Python API of both lines: ``Builder`` → ``create_network(flags)`` with
``NetworkDefinitionCreationFlag.STRONGLY_TYPED`` on 10.x (11.x: always strongly typed, flags 0) →
``OnnxParser.parse_from_file`` (every ``get_error(i)`` surfaced) → ``IBuilderConfig`` with
``set_memory_pool_limit(MemoryPoolType.WORKSPACE)``, no precision flags, ``clear_flag(TF32)`` for
fp32 plans ("fp32" means fp32), one ``IOptimizationProfile`` from the spec's symbolic axes, a
persisted ``ITimingCache`` (a foreign or corrupt one falls back to an empty cache), optionally
``VERSION_COMPATIBLE`` → ``build_serialized_network``. The plan is written before the timing cache.

A cache key (ONNX sha256, precision, profile shapes, flags, TensorRT version, GPU) lets an identical
request reuse the plan instead of rebuilding. Everything that does not need TensorRT (profile
planning, cache key, QDQ detection, network flags) is plain Python.
"""

from __future__ import annotations

import hashlib
import json
import time
import warnings
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from zsplg_runtime.integrity import file_records
from zsplg_runtime.tensors import Shapes, plan_profiles, resolve_ranges

from zsplg_fast.config.export import PRECISIONS
from zsplg_fast.errors import ConfigError, ExportFailedError
from zsplg_fast.export.artifact import SIDECAR_VERSION, Artifact, open_artifact, read_sidecar, sidecar_path
from zsplg_fast.export.tensors import AxisRange, TensorSpec
from zsplg_fast.export.trt_info import RuntimeInfo, require_tensorrt, runtime_info
from zsplg_fast.utils.io import atomic_write_bytes, atomic_write_json
from zsplg_fast.utils.outdir import check_writable, refuse_foreign_file


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
    from zsplg_fast.export.model_files import load_onnx

    model = load_onnx(onnx_path)
    return any(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in model.graph.node)


def plan_path(out_dir: str | Path, name: str, precision: str) -> Path:
    """``engines/<name>.<precision>.plan``."""
    return Path(out_dir) / f"{name}.{precision}.plan"


def trt_major(version: str) -> int:
    """``"10.16.1.11"`` → 10 (0 when unreadable)."""
    head = str(version).split(".")[0]
    return int(head) if head.isdigit() else 0


def network_flags(trt: Any) -> int:
    """``create_network`` flags: STRONGLY_TYPED on TensorRT 10.x; 0 on 11.x, where strong typing is
    always on (the flag is kept there only as a deprecated no-op)."""
    if trt_major(trt.__version__) >= 11:
        return 0
    return 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)


def onnx_precision(side: Mapping[str, Any]) -> str:
    """The precision an ONNX sidecar declares (an fp32 export has none: ``"fp32"``)."""
    return str(side.get("precision") or "fp32")


def base_name(side: Mapping[str, Any], fallback: str) -> str:
    """Artifact name without its precision suffix: ``sam_encoder.fp16`` → ``sam_encoder``."""
    name = str(side.get("name", fallback))
    suffix = f".{onnx_precision(side)}"
    return name[: -len(suffix)] if suffix != ".fp32" and name.endswith(suffix) else name


def check_precision(onnx_path: Path, side: Mapping[str, Any], precision: str) -> None:
    """Refuse a build whose requested precision is not the ONNX graph's (builds are strongly typed).

    Raises:
        ConfigError: unknown precision; a precision that differs from the sidecar's, saying how to make
            the precision ONNX; an int8 ONNX without Q/DQ nodes.
    """
    if precision not in PRECISIONS:
        raise ConfigError("export.precision", precision, "unknown precision", valid=", ".join(PRECISIONS))
    have = onnx_precision(side)
    if have != precision:
        raise ConfigError(
            "export.precision",
            precision,
            f"{onnx_path.name} is a {have} ONNX and TensorRT builds are strongly typed (the plan's "
            f"precision is the graph's). Make the {precision} ONNX first: `zsplg-fast build "
            f"{onnx_path} --precision {precision}` does it (precision_artifact in "
            "zsplg_fast.export.precision), then build that file",
            valid=have,
        )
    nothing_to_quantize = side.get("precision_settings", {}).get("qdq_nodes") == 0  # e.g. preprocessing
    if precision == "int8" and not nothing_to_quantize and not has_qdq(onnx_path):
        raise ConfigError(
            "export.precision",
            "int8",
            f"{onnx_path.name} has no QuantizeLinear/DequantizeLinear nodes; a strongly typed int8 "
            "plan needs an explicit-QDQ ONNX (precision_artifact(..., 'int8', calibration=...))",
            valid="fp32, fp16, bf16",
        )


def decoder_batch(
    side: Mapping[str, Any], max_batch: int | None, profiles: Mapping[str, AxisRange] | None
) -> dict[str, AxisRange]:
    """``{"batch": 1:max_batch:max_batch}`` for a prompt-batched decoder artifact (every spec of
    ``PROMPT_DECODERS``: the one-piece and the shared decoder) when ``max_batch`` is set and the caller's
    ``profiles`` leave ``batch`` open (plus ``mask_batch``: 1:1:max_batch where the artifact has that
    axis); else ``{}``. opt = max: the labeler sends batches of the plan's
    max whenever the GPU's memory allows (``amg_ops.engine_max_batch``, ``default_prompt_batch``)."""
    from zsplg_fast.export.specs.sam_decoder_batched import PROMPT_DECODERS

    if not max_batch or side.get("spec") not in PROMPT_DECODERS or "batch" in (profiles or {}):
        return {}
    given = {"batch": AxisRange(1, max_batch, max_batch)}
    axes = {a for d in side.get("inputs", []) for a in d.get("shape", []) if isinstance(a, str)}
    if "mask_batch" in axes and "mask_batch" not in (profiles or {}):
        # SAM 2's decoders that share their image side: mask prompts on their own axis, 1 row in AMG's
        # first pass (opt), one per prompt for m2m (max: the prompt batch's max)
        given["mask_batch"] = AxisRange(1, 1, max_batch)
    return given


def build_profiles(
    side: Mapping[str, Any], profiles: Mapping[str, AxisRange] | None, decoder_max_batch: int | None
) -> tuple[dict[str, AxisRange], Shapes]:
    """What :func:`build_engine` gives TensorRT for an ONNX sidecar ``side``: the axis ranges set by the
    caller (``profiles``, else ``decoder_max_batch`` for the prompt axis) and every input's min/opt/max."""
    inputs = [TensorSpec.from_dict(d) for d in side["inputs"]]
    given = {**decoder_batch(side, decoder_max_batch, profiles), **(profiles or {})}
    return given, plan_profiles(inputs, resolve_ranges(side, given))


def check_plan_destination(
    onnx_path: str | Path, out_dir: str | Path, precision: str, side: Mapping[str, Any] | None = None
) -> str:
    """Refuse, before anything is made (a precision ONNX, a plan), a plan destination that holds a file
    not written by zsplg-fast or that cannot be written. Returns the plan's base name.

    Raises:
        OutputExistsError: ``<out_dir>/<name>.<precision>.plan`` (or its sidecar) is not ours.
        OutputWriteError: ``out_dir`` is not a writable folder.
    """
    path = Path(onnx_path)
    name = base_name(side if side is not None else read_sidecar(path), path.stem)
    plan = plan_path(out_dir, name, precision)
    refuse_foreign_file((plan, sidecar_path(plan)), sidecar_path(plan), True)
    check_writable(out_dir)
    return name


def precision_onnx(
    onnx_path: str | Path,
    precision: str,
    *,
    calibration: Iterable[dict[str, Any]] | None = None,
    calibration_record: Mapping[str, Any] | None = None,
    int8_base: str = "fp16",
    force: bool = False,
) -> Path:
    """The ONNX a ``precision`` build reads: ``onnx_path`` itself when its sidecar already has that
    precision, else the precision ONNX made from this fp32 artifact beside it (``<stem>.<precision>.onnx``
    by :func:`zsplg_fast.export.precision.precision_artifact`; int8 needs ``calibration`` feeds, and
    ``calibration_record`` (source, images) goes into its sidecar). TensorRT's int8 is QDQ on the fp16
    AutoCast graph by default (``int8_base="fp16"``: the unquantized layers run fp16, not fp32).

    Raises:
        ConfigError: unknown precision, or a reduced-precision ONNX asked for another precision.
    """
    path = Path(onnx_path)
    side = open_artifact(path)  # sidecar checks + size/sha256, before a precision ONNX is made from it
    have = onnx_precision(side)
    if have == precision:
        return path
    if precision not in PRECISIONS or have != "fp32":
        check_precision(path, side, precision)  # raises, naming what to do
    from zsplg_fast.export.precision import precision_artifact

    extra = {"int8_base": int8_base} if int8_base != "fp32" else {}
    made = precision_artifact(
        path, precision, calibration=calibration, calibration_record=calibration_record, force=force, **extra
    )
    return Path(made.path)


def _parse(trt: Any, logger: Any, onnx_path: Path, name: str) -> tuple[Any, Any, Any]:
    builder = trt.Builder(logger)
    network = builder.create_network(network_flags(trt))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = []
        for i in range(parser.num_errors):
            err = parser.get_error(i)
            errors.append(f"[{err.code()}] node {err.node()}: {err.desc()}")
        raise ExportFailedError(name, "TensorRT ONNX parser", " | ".join(errors) or "unknown parser error")
    return builder, network, parser


def load_timing_cache(config: Any, cache_file: Path | None) -> str:
    """Attach a timing cache to ``config``: the persisted one, or an empty one when there is none or it
    is foreign (another TensorRT or GPU) or corrupt. Checks every return value.

    Returns ``"none"``, ``"empty"``, ``"loaded"`` or ``"foreign: <why>, rebuilt empty"`` (sidecar).
    Raises:
        ExportFailedError: even an empty timing cache could not be created or attached.
    """
    if cache_file is None:
        return "none"
    state = "empty"
    if cache_file.is_file():
        try:
            cache = config.create_timing_cache(cache_file.read_bytes())
            attached = cache is not None and bool(config.set_timing_cache(cache, False))
            why = "unreadable" if cache is None else "mismatch (another TensorRT or GPU)"
        except (RuntimeError, TypeError, ValueError) as e:  # pybind11 raises on a corrupt blob
            attached, why = False, f"{type(e).__name__}"
        if attached:
            return "loaded"
        state = f"foreign: {why}, rebuilt empty"
    cache = config.create_timing_cache(b"")
    if cache is None or not config.set_timing_cache(cache, False):
        raise ExportFailedError(str(cache_file), "TensorRT timing cache", "an empty timing cache was refused")
    return state


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
    decoder_max_batch: int | None = None,
) -> tuple[Artifact, bool]:
    """Build (or reuse) ``out_dir/<name>.<precision>.plan`` from an ONNX artifact of that precision.

    Args:
        onnx_path: ``export/<name>.onnx`` (fp32) or ``export/<name>.<precision>.onnx`` (from
            ``precision_artifact``); its sidecar's ``precision`` must equal ``precision``.
        decoder_max_batch: for the prompt-batched decoders (``sam_decoder_batched``,
            ``sam_decoder_shared``, ``sam2_decoder_batched``), the profile's batch max (prompts per decoder
            call; the labeler caps its batch there) unless ``profiles`` sets ``batch``.
    Returns:
        (the plan artifact, True if an identical cached plan was reused).
    Raises:
        ConfigError: unknown precision, an ONNX of another precision, a dynamic axis without a
            profile, int8 without Q/DQ nodes.
        MissingDependencyError: tensorrt or a CUDA GPU is missing.
        ExportFailedError: parser errors (all of them) or a failed build.
        OutputExistsError: a different plan of the same name exists and ``force`` is false.
    """
    onnx_path = Path(onnx_path)
    side = open_artifact(onnx_path)  # the ONNX is what its sidecar says (size, sha256)
    check_precision(onnx_path, side, precision)
    name = check_plan_destination(onnx_path, out_dir, precision, side)
    given, shapes = build_profiles(side, profiles, decoder_max_batch)
    if (side.get("spec_options") or {}).get("folded"):
        warnings.warn(
            f"{onnx_path}: exported with decoder_attention=folded (onnxruntime CPU's form); TensorRT's "
            "attention fusion matches decoder_attention=fused (export --decoder-attention fused)",
            stacklevel=2,
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
    if precision == "fp32":
        config.clear_flag(trt.BuilderFlag.TF32)  # "fp32" means fp32, not TF32 tensor-core math
    if version_compatible:
        config.set_flag(trt.BuilderFlag.VERSION_COMPATIBLE)
    profile = builder.create_optimization_profile()
    for input_name, (lo, mid, hi) in shapes.items():
        profile.set_shape(input_name, lo, mid, hi)
    config.add_optimization_profile(profile)
    cache_file = Path(timing_cache) if timing_cache else None
    cache_state = load_timing_cache(config, cache_file)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise ExportFailedError(
            name, "TensorRT build", "build_serialized_network returned None (see the log above)"
        )
    atomic_write_bytes(plan, bytes(serialized))  # the plan first: a cache write cannot lose the build
    if cache_file:
        atomic_write_bytes(cache_file, bytes(config.get_timing_cache().serialize()))
    rebuild = f"zsplg-fast build {onnx_path} --precision {precision} --out {Path(out_dir)} --force" + "".join(
        f" --profile {k}={v.min}:{v.opt}:{v.max}" for k, v in given.items()
    )
    record = {
        "sidecar_version": SIDECAR_VERSION,
        "kind": "tensorrt",
        "name": name,
        "spec": side.get("spec"),
        "precision": precision,
        "precision_tool": side.get("precision_tool", "none (fp32 export)"),
        "precision_tool_version": side.get("precision_tool_version"),
        "strongly_typed": True,
        "network_flags": network_flags(trt),
        "tf32": precision != "fp32",
        "inputs": side["inputs"],
        "outputs": side["outputs"],
        "tensorrt": running.tensorrt,
        "gpu": running.gpu,
        "compute_capability": running.compute_capability,
        "version_compatible": version_compatible,
        "onnx": {"path": str(onnx_path), "sha256": side["sha256"], "precision": onnx_precision(side)},
        "profiles": {k: [list(s) for s in v] for k, v in shapes.items()},
        "workspace_bytes": workspace,
        "optimization_level": optimization_level,
        "timing_cache": cache_state,
        "cache_key": key,
        "rebuild_command": rebuild,
        "build_time_s": round(time.perf_counter() - t0, 1),
        "size_bytes": plan.stat().st_size,
        "files": file_records([plan]),  # checked at every load (utils/integrity)
        **{
            k: side[k]
            for k in ("preprocessing", "class_names", "palette", "source", "spec_options")
            if k in side
        },
    }
    atomic_write_json(plan_side, record)
    return Artifact(plan, record), False
