"""Artifact formats and the options each can take (an ultralytics-style format table, written anew).

``check_options(fmt, given)`` refuses an option a format cannot take, listing the valid choices, e.g.
``export --precision int8`` (ONNX for onnxruntime is fp32; int8 is a TensorRT build of an explicit-QDQ
model) or ``export --profile ...`` (profiles belong to TensorRT builds).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from zsplg_fast.config.export import PRECISIONS
from zsplg_fast.errors import ConfigError


@dataclass(frozen=True)
class Format:
    """One artifact format: the command that makes it, its files, where it runs, what it accepts."""

    name: str
    command: str
    files: str
    backends: tuple[str, ...]
    devices: tuple[str, ...]
    precisions: tuple[str, ...]
    options: tuple[str, ...]
    note: str


FORMATS: dict[str, Format] = {
    "onnx": Format(
        "onnx",
        "export",
        "export/<name>.onnx (+ .onnx.data) + <name>.json",
        ("ort", "torch"),
        ("cpu", "cuda (onnxruntime-gpu)"),
        ("fp32",),
        (
            "precision",
            "opset",
            "exporter",
            "external_data",
            "allow_drift",
            "force",
            "with_preprocess",
            "decoder_attention",
            "classes",
        ),
        "validated against PyTorch in onnxruntime CPU; opset >= 17 (dynamo writes >= 18)",
    ),
    "onnx-int8": Format(
        "onnx-int8",
        "export --format onnx-int8",
        "export/<name>.int8.onnx + <name>.int8.json, beside the fp32 artifact",
        ("ort",),
        ("cpu",),
        ("int8",),
        (
            "precision",
            "opset",
            "exporter",
            "external_data",
            "allow_drift",
            "force",
            "with_preprocess",
            "decoder_attention",
            "classes",
        ),
        "onnxruntime dynamic quantization (MatMul/Gemm, per-channel QInt8); fidelity vs fp32 recorded",
    ),
    "tensorrt": Format(
        "tensorrt",
        "build",
        "engines/<name>.<precision>.plan + .json",
        ("trt",),
        ("cuda",),
        PRECISIONS,
        (
            "precision",
            "profiles",
            "workspace_gib",
            "timing_cache",
            "version_compatible",
            "optimization_level",
            "force",
        ),
        "NVIDIA GPU + TensorRT 10/11, strongly typed: the precision is the ONNX graph's (int8: explicit "
        "QDQ); plans are tied to TRT version + GPU",
    ),
}

_PRECISION_HINT = "CPU int8 is --format onnx-int8; fp16/bf16/int8 on GPU: zsplg-fast build --precision"
_HINTS = {
    ("onnx", "precision"): _PRECISION_HINT,
    ("onnx", "profiles"): "optimisation profiles belong to TensorRT builds: zsplg-fast build --profile",
}


def get_format(name: str) -> Format:
    if name not in FORMATS:
        raise ConfigError("format", name, "unknown format", valid=", ".join(FORMATS))
    return FORMATS[name]


def check_options(fmt: str, given: Mapping[str, Any]) -> None:
    """Refuse options (name → value, None = not given) that format ``fmt`` cannot take.

    Raises:
        ConfigError: naming the option, the format and the valid choices.
    """
    f = get_format(fmt)
    for opt_name, value in given.items():
        if value is None:
            continue
        hint = _HINTS.get((fmt, opt_name))
        if opt_name not in f.options:
            raise ConfigError(
                f"--{opt_name.replace('_', '-')}",
                value,
                f"format '{fmt}' cannot take this option" + (f" ({hint})" if hint else ""),
                valid=", ".join(f"--{o.replace('_', '-')}" for o in f.options),
            )
        if opt_name == "precision" and value not in f.precisions:
            raise ConfigError(
                "--precision",
                value,
                f"format '{fmt}' cannot take this precision" + (f" ({hint})" if hint else ""),
                valid=", ".join(f.precisions),
            )


def formats_table() -> list[dict[str, str]]:
    """Rows for printing: format, command, files, backends, devices, precisions, note."""
    return [
        {
            "format": f.name,
            "command": f.command,
            "files": f.files,
            "backends": ", ".join(f.backends),
            "devices": ", ".join(f.devices),
            "precisions": ", ".join(f.precisions),
            "note": f.note,
        }
        for f in FORMATS.values()
    ]
