"""Benchmark and deploy sections of the config (issue 6): the latency matrix and the edge deploy folder.

Component and backend names are listed here (config sits below ``bench``); the bench registries in
:mod:`zsplg_fast.bench.components` and :mod:`zsplg_fast.bench.backends` hold the same keys.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from zsplg_fast.config.fields import opt
from zsplg_fast.config.train import EVAL_MODES, SEGMENTER_BACKBONES
from zsplg_fast.errors import ConfigError

BENCH_COMPONENTS = (
    "sam_encoder",
    "sam_decoder_batched",
    "clip_dense",
    "clip_text",
    "segmenter",
    "labeling",
    "segmenter_image",
)
BENCH_BACKENDS = (
    "torch",
    "torch_compile",
    "torch_fp16",
    "torch_bf16",
    "ort_cpu",
    "ort_cuda",
    "ort_trt",
    "trt_fp32",
    "trt_fp16",
    "trt_int8",
)
# opt-in extras (not in the default list): onnxruntime CPU on a static QDQ INT8 model
BENCH_EXTRA_BACKENDS = ("ort_int8",)
DEPLOY_PRECISIONS = ("fp32", "fp16", "int8")
DEPLOY_BACKENDS = ("ort", "trt", "torch")
_SIZE = re.compile(r"^(\d+)(?:x(\d+))?$")


def parse_size(item: str, key: str) -> tuple[int, int]:
    """``"512"`` → (512, 512); ``"480x640"`` → (480, 640) as (H, W). Raises ConfigError."""
    m = _SIZE.match(str(item).strip())
    if not m:
        raise ConfigError(key, item, "size must look like S or HxW", valid="e.g. 512 or 480x640")
    h = int(m.group(1))
    w = int(m.group(2) or m.group(1))
    if not (16 <= h <= 8192 and 16 <= w <= 8192):
        raise ConfigError(key, item, "size out of range", valid="16..8192 per side")
    return h, w


def _check_names(key: str, values: list[str], valid: tuple[str, ...]) -> None:
    for i, v in enumerate(values):
        if v not in valid:
            raise ConfigError(f"{key}[{i}]", v, "unknown name", valid=", ".join(valid))
    if not values:
        raise ConfigError(key, values, "needs at least one entry", valid=", ".join(valid))


@dataclass
class BenchConfig:
    """``zsplg-fast bench``: which components × backends, model sizes, and the timing method.

    Models come from the ``sam`` and ``clip`` sections (random weights when no checkpoint is given).
    """

    components: list[str] = opt(factory=lambda: list(BENCH_COMPONENTS), help="rows of the matrix")
    backends: list[str] = opt(factory=lambda: list(BENCH_BACKENDS), help="columns (+ ort_int8 opt-in)")
    segmenter_backbone: str = opt("resnet101", choices=SEGMENTER_BACKBONES, help="when no checkpoint")
    segmenter_checkpoint: str | None = opt(None, help="segmenter .pth; null = random weights")
    segmenter_classes: int = opt(21, ge=1, le=255, help="classes of a random-weight segmenter")
    segmenter_sizes: list[str] = opt(factory=lambda: ["256", "512", "1024"], help="S or HxW per case")
    decoder_batches: list[int] = opt(factory=lambda: [16, 64, 256], help="prompt sets per decoder call")
    clip_sizes: list[int] = opt(factory=lambda: [224, 448], help="clip_dense input sizes")
    text_batch: int = opt(32, ge=1, le=4096, help="prompts per clip_text call")
    skip: list[str] = opt(factory=list, help="cells not to run, 'component:backend' ('*' = any)")
    image: str | None = opt(None, help="image for labeling / segmenter_image; null = a synthetic one")
    image_size: str = opt("480x640", help="HxW of the synthetic image")
    grid: int = opt(16, ge=1, le=64, help="AMG points_per_side for the end-to-end labeling case")
    warmup: int = opt(1, ge=0, le=100, help="untimed runs per cell")
    budget_s: float = opt(10.0, gt=0.0, help="timed seconds per cell (after warm-up)")
    max_iters: int = opt(50, ge=1, help="timed iterations cap per cell")
    min_iters: int = opt(1, ge=1, help="timed iterations even when the budget is spent")
    device: str = opt("auto", help="torch / torch_compile device: auto | cpu | cuda[:N]")
    threads: int | None = opt(None, ge=1, le=1024, help="torch and onnxruntime intra-op threads")
    artifacts: str | None = opt(None, help="ONNX / plan cache; null = export/bench/<name of --out>")
    exporter: str | None = opt(None, choices=("dynamo", "legacy"), help="null = each spec's own")
    out: str = opt("bench/results/latest", help="folder for bench.json, bench.md, bench.png")
    force: bool = opt(False, help="replace an existing results folder")

    def validate(self, prefix: str) -> None:
        _check_names(f"{prefix}.components", self.components, BENCH_COMPONENTS)
        _check_names(f"{prefix}.backends", self.backends, BENCH_BACKENDS + BENCH_EXTRA_BACKENDS)
        for i, s in enumerate(self.segmenter_sizes):
            parse_size(s, f"{prefix}.segmenter_sizes[{i}]")
        parse_size(self.image_size, f"{prefix}.image_size")
        for i, item in enumerate(self.skip):
            comp, sep, backend = item.partition(":")
            if (
                not sep
                or comp not in (*BENCH_COMPONENTS, "*")
                or backend not in (*BENCH_BACKENDS, *BENCH_EXTRA_BACKENDS, "*")
            ):
                raise ConfigError(f"{prefix}.skip[{i}]", item, "must be component:backend ('*' = any)")
        for i, b in enumerate(self.decoder_batches):
            if b < 1:
                raise ConfigError(f"{prefix}.decoder_batches[{i}]", b, "must be >= 1")
        for i, s in enumerate(self.clip_sizes):
            if s < 16:
                raise ConfigError(f"{prefix}.clip_sizes[{i}]", s, "must be >= 16 (a multiple of the patch)")


@dataclass
class DeployConfig:
    """``zsplg-fast deploy``: export, reduce precision, measure the mIoU it costs, write the folder."""

    checkpoint: str | None = opt(None, help="segmenter checkpoint (.pth from train)")
    precision: str = opt("int8", choices=DEPLOY_PRECISIONS)
    calib: str | None = opt(None, help="calibration dataset KIND:DIR (int8)")
    calib_split: str | None = opt("train", help="split of the calibration dataset (null = all)")
    calib_images: int = opt(64, ge=1, le=100000, help="images fed through the calibration reader")
    val: str | None = opt(None, help="validation dataset KIND:DIR (labeled)")
    val_split: str | None = opt("val", help="split of the validation dataset (null = all)")
    val_images: int | None = opt(None, ge=1, help="evaluate on the first N val images (null = all)")
    eval_mode: str = opt("original", choices=EVAL_MODES, help="UniMatch evaluation mode (as `evaluate`)")
    window: int = opt(321, ge=16, help="sliding-window / center-crop size")
    max_miou_drop: float = opt(1.0, help="largest mIoU drop allowed, in points (fp32 → deployed)")
    calibrate_method: str = opt("minmax", choices=("minmax", "entropy", "percentile"))
    int8_target: str = opt(
        "tensorrt",
        choices=("tensorrt", "cpu"),
        help="int8 QDQ for TensorRT (symmetric int8 activations) or for onnxruntime CPU (uint8 "
        "activations: the fast CPU form, which TensorRT refuses)",
    )
    latency_size: str = opt("512", help="S or HxW input used to time fp32 and deployed models")
    latency_budget_s: float = opt(5.0, gt=0.0, help="timed seconds per model")
    exporter: str | None = opt(None, choices=("dynamo", "legacy"), help="null = the segmenter spec's")
    threads: int | None = opt(None, ge=1, le=1024, help="onnxruntime / torch intra-op threads")
    out: str = opt("deploy/segmenter", help="deploy folder (refused if it exists, unless force)")
    force: bool = opt(False, help="replace an existing deploy folder")

    def validate(self, prefix: str) -> None:
        parse_size(self.latency_size, f"{prefix}.latency_size")
