"""Labeling sections of the config: data source, AMG, classification, the dataset job."""

from __future__ import annotations

import re
from dataclasses import dataclass

from zsplg_fast.config.fields import opt
from zsplg_fast.errors import ConfigError


@dataclass
class DataConfig:
    """Where images come from, and the checks applied when loading them."""

    source: str | None = opt(None, help="voc:DIR | coco:DIR[:ANN.json] | folder:DIR | synthetic:DIR")
    split: str | None = opt(None, help="UniMatch-style split file (one 'img [label]' per line)")
    max_long_side: int = opt(16384, ge=32, help="refuse images whose long side exceeds this (bomb guard)")
    rescale_high_bit_depth: bool = opt(False, help="rescale 16-bit/float images to 8-bit instead of refusing")

    def validate(self, prefix: str) -> None:
        if self.source is not None and ":" not in self.source:
            raise ConfigError(
                f"{prefix}.source", self.source, "must be KIND:PATH", valid="voc:, coco:, folder:, synthetic:"
            )


@dataclass
class AmgConfig:
    """Automatic mask generation; the same parameters as upstream SamAutomaticMaskGenerator."""

    points_per_side: int = opt(32, ge=1, le=256)
    points_per_batch: int = opt(64, ge=1, le=65536)
    pred_iou_thresh: float = opt(0.88, ge=0.0, le=1.0)
    stability_score_thresh: float = opt(0.95, ge=0.0, le=1.0)
    stability_score_offset: float = opt(1.0, ge=0.0)
    box_nms_thresh: float = opt(0.7, ge=0.0, le=1.0)
    crop_n_layers: int = opt(0, ge=0, le=4)
    crop_nms_thresh: float = opt(0.7, ge=0.0, le=1.0)
    crop_overlap_ratio: float = opt(512 / 1500, ge=0.0, lt=1.0)
    crop_n_points_downscale_factor: int = opt(1, ge=1)
    min_mask_region_area: int = opt(0, ge=0)
    # SAM2AutomaticMaskGenerator's parameters (SAM 2 variants only; SAM's AMG has none of them)
    mask_threshold: float = opt(0.0, help="SAM 2: logit cut-off of a mask (SAM: always 0.0)")
    multimask_output: bool = opt(
        True, help="SAM 2: three masks per point (false: one, dynamic via stability)"
    )
    use_m2m: bool = opt(False, help="SAM 2: one refinement step with each mask as the mask prompt")


@dataclass
class ClassifyConfig:
    """Naming masks: classes, background threshold, and the painting policy."""

    classes: str = opt(
        "voc",
        help="voc | coco | auto (the dataset's classes.txt; label and run) | a class file ('|' synonyms)",
    )
    score_threshold: float = opt(0.0, ge=0.0, le=1.0, help="below this softmax score a mask is background")
    logit_scale: float = opt(100.0, gt=0.0, help="softmax temperature applied to cosines")
    uncovered: str = opt(
        "background", choices=("background", "ignore"), help="label of pixels no mask covers"
    )
    include_background_prompt: bool = opt(
        False, help="also match masks against the background class names (else index 0 is never predicted)"
    )


_SHARD = re.compile(r"^(\d+)/(\d+)$")


@dataclass
class LabelJobConfig:
    """The dataset job: where to write, how to split work, how to run."""

    out: str = opt("out", help="output folder (labels/, meta/, manifest.json, errors.jsonl)")
    shard: str = opt("0/1", help="i/N: this process labels every N-th image starting at i")
    max_errors: int | None = opt(None, ge=0, help="stop after this many failed images (null = never)")
    masks: str = opt("fast", help="mask source: fast (engine AMG) or upstream (segment-anything AMG)")
    prompt_batch: int | None = opt(
        None,
        ge=1,
        help="prompts per decoder call; null = automatic: cache-sized on CPU, memory-aware on CUDA",
    )
    backend: str = opt("torch", choices=("torch", "ort", "trt"))
    engines: str | None = opt(None, help="folder of exported artifacts (default: export/ and engines/)")
    device: str = opt("auto", help="torch device: auto | cpu | cuda | cuda:N")
    precision: str = opt(
        "auto",
        choices=("auto", "fp32", "fp16", "bf16", "int8"),
        help="auto = bf16 autocast for the torch backend on CUDA, exact fp32 elsewhere",
    )
    compile: str = opt(
        "auto",
        choices=("auto", "on", "off"),
        help="torch.compile the SAM engines and the AMG filter (torch backend); auto = on CUDA for jobs "
        "of >= 100 images (Inductor's cache persists under ~/.cache/zsplg-fast/inductor)",
    )
    ort_gpu_mem_limit_mb: int = opt(
        0,
        ge=0,
        help="onnxruntime CUDA arena cap per session in MiB (0 = no cap); the arena grows by what is "
        "requested (kSameAsRequested), not to the next power of two",
    )
    ort_cpu_arena: bool = opt(
        True, help="onnxruntime CPU memory arena (off: malloc, so freed memory returns for torch to reuse)"
    )
    devices: str | None = opt(
        None,
        help="one worker process per device over disjoint shards: all | cuda:0,cuda:1 | cpu:N | N",
    )
    executor: str = opt("local", choices=("local", "ray"))
    ray_address: str | None = opt(None)
    workers: int = opt(1, ge=1, le=1024, help="ray GPU-stage actors")
    num_gpus_per_worker: float | str = opt(
        "auto",
        ge=0.0,
        help="GPUs per ray labeling actor: auto (1 when the cluster has GPUs, else CPU actors with a "
        "warning) | a number (0 = CPU actors, 0.5 = two actors share a GPU)",
    )
    ray_batch: int = opt(4, ge=1, le=256, help="images per batch of the ray GPU stage")
    io_workers: int = opt(2, ge=0, le=64, help="image-decoding threads")
    prefetch: int = opt(4, ge=1, le=256, help="bounded queue of decoded images")
    image_batch: int = opt(1, ge=1, le=64, help="images whose crops share encoder batches (GPU: try 4)")
    overlays: int = opt(0, ge=0, le=64, help="write a grid PNG of this many samples")
    save_masks: bool = opt(False, help="write per-image COCO RLE masks into meta/")
    seed: int = opt(0)
    work_long_side: int = opt(
        2048,
        ge=0,
        help="masks and classes run on the image with its long side capped here, the label is upsampled "
        "to the image's size (0 = full resolution)",
    )
    check_first: int = opt(
        5, ge=0, help="warn when the first N labels are degenerate (one class > 98 %, no masks; 0 = off)"
    )

    def validate(self, prefix: str) -> None:
        if isinstance(self.num_gpus_per_worker, str) and self.num_gpus_per_worker != "auto":
            raise ConfigError(
                f"{prefix}.num_gpus_per_worker",
                self.num_gpus_per_worker,
                "not a number",
                valid="auto, 0, 0.5, 1",
            )
        m = _SHARD.match(self.shard)
        if not m or int(m.group(2)) < 1 or int(m.group(1)) >= int(m.group(2)):
            raise ConfigError(f"{prefix}.shard", self.shard, "must be i/N with 0 <= i < N", valid="e.g. 0/4")

    @property
    def shard_index(self) -> tuple[int, int]:
        """(i, N) parsed from ``shard``."""
        i, n = self.shard.split("/")
        return int(i), int(n)
