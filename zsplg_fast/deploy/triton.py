"""A Triton Inference Server model repository for a deploy folder, and its check against Triton's schema.

Writes ``triton/<model>/config.pbtxt`` and ``triton/<model>/1/model.onnx`` (the onnxruntime backend,
``platform: "onnxruntime_onnx"``). The config follows Triton's model configuration
(``model_config.proto`` of triton-inference-server/common, and the server's model_configuration.md):
``max_batch_size > 0`` with ``dims`` that leave out the batch axis, ``-1`` for variable sizes,
``TYPE_*`` data types, Triton's dynamic batcher (``dynamic_batching``: preferred batch sizes within
``max_batch_size``, a queue delay), one GPU instance group. ``triton/README.md`` says what a client sends
(the preprocessing) and gets back.

:func:`validate_repository` parses ``config.pbtxt`` with ``google.protobuf.text_format`` into
``inference.ModelConfig``: tritonclient's ``model_config_pb2`` when it is installed, else the
documented schema's messages built here (same names, field numbers and types for every field we write;
``tritonclient[grpc]`` pins protobuf 6 and this environment has 7, so it is not a dependency). It then
applies Triton's rules that the parser cannot: the folder name is the model name, version ``1`` holds
``model.onnx``, and inputs/outputs match the ONNX graph (names, types, ranks with the batch axis).
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from zsplg_fast.errors import ConfigError
from zsplg_fast.utils.io import atomic_write_text

# numpy dtype name → Triton DataType (model_config.proto)
TRITON_TYPES: dict[str, str] = {
    "bool": "TYPE_BOOL",
    "uint8": "TYPE_UINT8",
    "int8": "TYPE_INT8",
    "int32": "TYPE_INT32",
    "int64": "TYPE_INT64",
    "float16": "TYPE_FP16",
    "float32": "TYPE_FP32",
    "float64": "TYPE_FP64",
}
_ONNX_TO_TRITON = {1: "TYPE_FP32", 2: "TYPE_UINT8", 3: "TYPE_INT8", 6: "TYPE_INT32", 7: "TYPE_INT64",
                   9: "TYPE_BOOL", 10: "TYPE_FP16", 11: "TYPE_FP64"}  # fmt: skip
_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")


def _dims(shape: list[Any]) -> list[int]:
    return [d if isinstance(d, int) else -1 for d in shape[1:]]


def _tensor(kind: str, spec: Mapping[str, Any]) -> str:
    dims = ", ".join(str(d) for d in _dims(list(spec["shape"])))
    return (
        f'{kind} [\n  {{\n    name: "{spec["name"]}"\n    data_type: {TRITON_TYPES[str(spec["dtype"])]}\n'
        f"    dims: [ {dims} ]\n  }}\n]\n"
    )


QUEUE_DELAY_US = 500  # how long Triton's dynamic batcher waits for more requests to fill a batch


def preferred_batches(batch_min: int, batch_opt: int, batch_max: int) -> list[int]:
    """The batch sizes the dynamic batcher should aim for: the profile's opt and max (distinct, > 1)."""
    return sorted({b for b in (batch_opt, batch_max) if b > 1 and batch_min <= b <= batch_max})


def config_pbtxt(side: Mapping[str, Any], model: str) -> str:
    """``config.pbtxt`` text for the ONNX described by ``side`` (batch axis first on every tensor), with
    Triton's dynamic batcher: requests are grouped up to the profile's batch max, preferring its opt
    and max, waiting at most :data:`QUEUE_DELAY_US` µs."""
    lo, opt, batch_max = (int(v) for v in side.get("profiles", {}).get("batch", [1, 1, 8]))
    head = f'name: "{model}"\nplatform: "onnxruntime_onnx"\nmax_batch_size: {batch_max}\n'
    body = "".join(_tensor("input", s) for s in side["inputs"]) + "".join(
        _tensor("output", s) for s in side["outputs"]
    )
    preferred = ", ".join(str(b) for b in preferred_batches(lo, opt, batch_max))
    batching = (
        "dynamic_batching {\n"
        + (f"  preferred_batch_size: [ {preferred} ]\n" if preferred else "")
        + f"  max_queue_delay_microseconds: {QUEUE_DELAY_US}\n}}\n"
    )
    group = "instance_group [\n  {\n    kind: KIND_GPU\n    count: 1\n  }\n]\n"
    return head + body + batching + group


def readme_note(side: Mapping[str, Any], model: str) -> str:
    """``triton/README.md``: what a client sends (the preprocessing) and gets back, for this repository."""
    pre = side.get("preprocessing", {})
    names = side.get("class_names") or []
    return f"""# Triton model repository: `{model}`

`tritonserver --model-repository=$PWD` serves `{model}` with the onnxruntime backend and the dynamic
batcher (`config.pbtxt`). Triton runs the network only: the client does the preprocessing.

Preprocessing (as `zsplg-runtime` / `zsplg-fast infer` do it): RGB uint8 (H, W, 3) → float32 / 255 →
subtract mean {pre.get("mean")} → divide by std {pre.get("std")} → (3, H, W), sent as input `image`
(batch axis added by Triton). Output `logits` (C, H, W): the label is the argmax over C, one of
{len(names)} classes: {", ".join(names)}.
"""


def write_repository(side: Mapping[str, Any], onnx_path: Path, root: Path, model: str = "segmenter") -> Path:
    """Write ``root/<model>/config.pbtxt`` and ``root/<model>/1/model.onnx``; returns the model folder."""
    if not _NAME.match(model):
        raise ConfigError("triton model", model, "use letters, digits, '_', '-', '.'")
    folder = root / model
    (folder / "1").mkdir(parents=True, exist_ok=True)
    shutil.copyfile(onnx_path, folder / "1" / "model.onnx")
    atomic_write_text(folder / "config.pbtxt", config_pbtxt(side, model))
    atomic_write_text(root / "README.md", readme_note(side, model))
    return folder


# The documented schema (model_config.proto), the messages and fields this module writes or checks:
# message → [(field, number, type, repeated)]; type: a scalar name, or ".inference.<Message or Enum>".
_ENUMS: dict[str, list[str]] = {
    "DataType": ["TYPE_INVALID", "TYPE_BOOL", "TYPE_UINT8", "TYPE_UINT16", "TYPE_UINT32", "TYPE_UINT64",
                 "TYPE_INT8", "TYPE_INT16", "TYPE_INT32", "TYPE_INT64", "TYPE_FP16", "TYPE_FP32",
                 "TYPE_FP64", "TYPE_STRING", "TYPE_BF16"],
    "ModelInput.Format": ["FORMAT_NONE", "FORMAT_NHWC", "FORMAT_NCHW"],
    "ModelInstanceGroup.Kind": ["KIND_AUTO", "KIND_GPU", "KIND_CPU", "KIND_MODEL"],
}  # fmt: skip
_MESSAGES: dict[str, list[tuple[str, int, str, bool]]] = {
    "ModelTensorReshape": [("shape", 1, "int64", True)],
    "ModelInput": [
        ("name", 1, "string", False),
        ("data_type", 2, ".inference.DataType", False),
        ("format", 3, ".inference.ModelInput.Format", False),
        ("dims", 4, "int64", True),
        ("reshape", 5, ".inference.ModelTensorReshape", False),
        ("is_shape_tensor", 6, "bool", False),
        ("allow_ragged_batch", 7, "bool", False),
        ("optional", 8, "bool", False),
    ],
    "ModelOutput": [
        ("name", 1, "string", False),
        ("data_type", 2, ".inference.DataType", False),
        ("dims", 3, "int64", True),
        ("label_filename", 4, "string", False),
        ("reshape", 5, ".inference.ModelTensorReshape", False),
    ],
    "ModelDynamicBatching": [
        ("preferred_batch_size", 1, "int32", True),
        ("max_queue_delay_microseconds", 2, "uint64", False),
        ("preserve_ordering", 3, "bool", False),
    ],
    "ModelInstanceGroup": [
        ("name", 1, "string", False),
        ("count", 2, "int32", False),
        ("gpus", 3, "int32", True),
        ("kind", 4, ".inference.ModelInstanceGroup.Kind", False),
    ],
    "ModelConfig": [
        ("name", 1, "string", False),
        ("platform", 2, "string", False),
        ("max_batch_size", 4, "int32", False),
        ("input", 5, ".inference.ModelInput", True),
        ("output", 6, ".inference.ModelOutput", True),
        ("instance_group", 7, ".inference.ModelInstanceGroup", True),
        ("default_model_filename", 8, "string", False),
        ("dynamic_batching", 11, ".inference.ModelDynamicBatching", False),
        ("backend", 17, "string", False),
    ],
}


def _documented_schema() -> Any:
    """``inference.ModelConfig`` built from :data:`_MESSAGES` / :data:`_ENUMS` (no tritonclient)."""
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    F = descriptor_pb2.FieldDescriptorProto
    scalars = {
        "string": F.TYPE_STRING,
        "int32": F.TYPE_INT32,
        "int64": F.TYPE_INT64,
        "uint64": F.TYPE_UINT64,
        "bool": F.TYPE_BOOL,
    }
    f = descriptor_pb2.FileDescriptorProto(
        name="zsplg_model_config.proto", package="inference", syntax="proto3"
    )
    messages = {}
    for name, fields in _MESSAGES.items():
        m = messages[name] = f.message_type.add(name=name)
        for field, number, kind, repeated in fields:
            label = F.LABEL_REPEATED if repeated else F.LABEL_OPTIONAL
            if kind in scalars:
                m.field.add(name=field, number=number, type=scalars[kind], label=label)
            else:
                is_enum = kind.rsplit(".", 1)[-1] in {e.rsplit(".", 1)[-1] for e in _ENUMS}
                t = F.TYPE_ENUM if is_enum else F.TYPE_MESSAGE
                m.field.add(name=field, number=number, type=t, label=label, type_name=kind)
    for name, values in _ENUMS.items():
        owner, _, short = name.rpartition(".")
        e = (messages[owner].enum_type if owner else f.enum_type).add(name=short)
        for i, v in enumerate(values):
            e.value.add(name=v, number=i)
    pool = descriptor_pool.DescriptorPool()
    pool.Add(f)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("inference.ModelConfig"))


def model_config_class() -> tuple[Any, str]:
    """(``inference.ModelConfig`` class, where it came from): tritonclient's, else the documented one."""
    try:
        from tritonclient.grpc import model_config_pb2  # type: ignore[import-not-found]

        return model_config_pb2.ModelConfig, "tritonclient.grpc.model_config_pb2"
    except ImportError:
        return _documented_schema(), "documented schema (model_config.proto fields, built here)"


def validate_repository(folder: Path) -> Any:
    """Parse and check ``folder`` (``<repo>/<model>``) as Triton would load it; returns the ModelConfig.

    Raises:
        ConfigError: a config Triton's parser refuses, or one that does not match the folder / ONNX.
    """
    import onnx
    from google.protobuf import text_format

    where = str(folder / "config.pbtxt")
    try:
        cfg = text_format.Parse(
            (folder / "config.pbtxt").read_text(encoding="utf-8"), model_config_class()[0]()
        )
    except (OSError, text_format.ParseError) as e:
        raise ConfigError("triton", where, f"not a ModelConfig: {e}") from e
    problems = []
    if cfg.name != folder.name:
        problems.append(f"name {cfg.name!r} is not the folder name {folder.name!r}")
    if cfg.platform != "onnxruntime_onnx" and cfg.backend != "onnxruntime":
        problems.append("neither platform onnxruntime_onnx nor backend onnxruntime")
    model_file = folder / "1" / (cfg.default_model_filename or "model.onnx")
    if not model_file.is_file():
        raise ConfigError("triton", where, f"{model_file} is missing")
    graph = onnx.load(str(model_file), load_external_data=False).graph
    batch = 1 if cfg.max_batch_size > 0 else 0
    if cfg.HasField("dynamic_batching"):
        sizes = list(cfg.dynamic_batching.preferred_batch_size)
        if cfg.max_batch_size <= 0:
            problems.append("dynamic_batching needs max_batch_size > 0")
        elif any(b < 1 or b > cfg.max_batch_size for b in sizes):
            problems.append(
                f"preferred_batch_size {sizes} must lie in 1..max_batch_size {cfg.max_batch_size}"
            )
    data_types = cfg.DESCRIPTOR.file.enum_types_by_name["DataType"]
    for declared, values in ((cfg.input, graph.input), (cfg.output, graph.output)):
        real = {v.name: v.type.tensor_type for v in values}
        if {t.name for t in declared} != set(real):
            problems.append(f"tensors {sorted(t.name for t in declared)} != the graph's {sorted(real)}")
            continue
        for t in declared:
            want = _ONNX_TO_TRITON.get(real[t.name].elem_type)
            if data_types.values_by_number[t.data_type].name != want:
                problems.append(f"{t.name}: data_type is not the graph's {want}")
            if len(t.dims) + batch != len(real[t.name].shape.dim) or any(d == 0 or d < -1 for d in t.dims):
                problems.append(
                    f"{t.name}: dims {list(t.dims)} do not fit the graph's rank (batch axis left out)"
                )
    if problems:
        raise ConfigError("triton", where, "; ".join(problems))
    return cfg
