"""Export / build sections of the config (issue 3): ONNX export and TensorRT engine builds."""

from __future__ import annotations

import re
from dataclasses import dataclass

from zsplg_fast.config.fields import opt
from zsplg_fast.errors import ConfigError

EXPORTER_CHOICES = ("dynamo", "legacy")
EXPORT_FORMATS = ("onnx", "onnx-int8")
PRECISIONS = ("fp32", "fp16", "bf16", "int8")
DECODER_ATTENTION = ("fused", "folded")
"""The AMG decoders' cross attention in the ONNX graph (export/specs/folded.py): ``fused`` = TensorRT's
multi-head-attention pattern (scale on Q, MatMul → Softmax → MatMul), ``folded`` = the image-side
projections folded to the prompt-token side (about 40 % fewer MACs; onnxruntime on CPU)."""
_PROFILE = re.compile(r"^\s*([A-Za-z_][\w.]*)\s*=\s*(\d+)(?::(\d+):(\d+))?\s*$")


def parse_profile(item: str, key: str = "export.profiles") -> tuple[str, int, int, int]:
    """``"batch=1:8:32"`` → ("batch", 1, 8, 32); ``"batch=4"`` → ("batch", 4, 4, 4).

    Raises:
        ConfigError: malformed entry, or not 1 <= min <= opt <= max.
    """
    m = _PROFILE.match(item)
    if not m:
        raise ConfigError(key, item, "profile must look like axis=min:opt:max or axis=size")
    name, a, b, c = m.groups()
    lo, mid, hi = (int(a), int(b), int(c)) if b is not None else (int(a),) * 3
    if not 1 <= lo <= mid <= hi:
        raise ConfigError(key, item, "need 1 <= min <= opt <= max")
    return name, lo, mid, hi


def parse_exporter_override(item: str, key: str = "export.exporter_overrides") -> tuple[str, str]:
    """``"sam_encoder=legacy"`` → ("sam_encoder", "legacy")."""
    name, sep, value = item.partition("=")
    if not sep or not name.strip() or value.strip() not in EXPORTER_CHOICES:
        raise ConfigError(key, item, "must look like spec=exporter", valid=", ".join(EXPORTER_CHOICES))
    return name.strip(), value.strip()


@dataclass
class ExportConfig:
    """ONNX export (``zsplg-fast export``) and TensorRT builds (``zsplg-fast build``)."""

    out_dir: str = opt("export", help="ONNX artifacts folder: <name>.onnx (+ .onnx.data) and <name>.json")
    format: str = opt("onnx", choices=EXPORT_FORMATS, help="onnx, or onnx-int8 (+ dynamic INT8 copies)")
    opset: int = opt(18, ge=17, le=23, help="ONNX opset; the dynamo exporter writes at least 18")
    exporter: str | None = opt(None, choices=EXPORTER_CHOICES, help="force one exporter; null = per spec")
    exporter_overrides: list[str] = opt(factory=list, help="per-spec exporter, e.g. ['sam_encoder=legacy']")
    external_data: bool | None = opt(
        None, help="weights in <name>.onnx.data: true, false, null = above 1.8 GB"
    )
    allow_drift: bool = opt(False, help="keep artifacts that fail validation (recorded in the sidecar)")
    force: bool = opt(False, help="replace existing artifacts of the same name")
    with_preprocess: bool = opt(False, help="SAM encoder takes uint8 HWC and normalises/pads in the graph")
    decoder_attention: str = opt(
        "fused",
        choices=DECODER_ATTENTION,
        help="AMG decoders' cross attention: fused (TensorRT's attention fusion) or folded (onnxruntime "
        "CPU: about 1.45x faster per prompt, same function up to float rounding)",
    )
    classes: str | None = opt(
        None, help="class list (voc, coco or a file) → text_embeddings.npy beside clip_text"
    )
    segmenter_checkpoint: str | None = opt(None, help="segmenter checkpoint for `export segmenter|all`")
    engines_dir: str = opt("engines", help="TensorRT plans: <name>.<precision>.plan and .json")
    precision: str = opt(
        "fp16", choices=PRECISIONS, help="TensorRT precision; int8 needs an explicit-QDQ ONNX"
    )
    profiles: list[str] = opt(factory=list, help="min:opt:max per dynamic axis, e.g. ['batch=1:64:256']")
    workspace_gib: float = opt(4.0, gt=0, le=1024, help="TensorRT workspace memory-pool limit (GiB)")
    timing_cache: str | None = opt(
        "engines/timing.cache", help="persisted TensorRT timing cache; null = none"
    )
    version_compatible: bool = opt(False, help="TensorRT VERSION_COMPATIBLE plans (run on later TRT 10.x)")
    optimization_level: int = opt(3, ge=0, le=5, help="TensorRT builder optimisation level")
    decoder_max_batch: int = opt(
        256,
        ge=1,
        le=4096,
        help="prompt-batched decoder plans (sam_decoder_batched, sam_decoder_shared, sam2_decoder_batched): "
        "most prompts per decoder call (profile batch opt and max); the labeler caps its prompt batch there",
    )

    def validate(self, prefix: str) -> None:
        for i, item in enumerate(self.profiles):
            parse_profile(item, f"{prefix}.profiles[{i}]")
        for i, item in enumerate(self.exporter_overrides):
            parse_exporter_override(item, f"{prefix}.exporter_overrides[{i}]")
