"""Training sections of the config: segmenter, data, optimiser, UniMatch + fusion, final training,
enhancement, evaluation and the run itself (device, AMP, seeds, checkpoints).

Defaults follow UniMatch ``configs/pascal.yaml``; ``zsplg_fast/configs/{pascal,coco}.yaml`` hold the
dataset presets. Owned by the training work (issue 5).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from zsplg_fast.config.fields import opt
from zsplg_fast.errors import ConfigError

# Names registered in zsplg_fast.models.segmenter.BACKBONES (config sits below models, so listed here).
SEGMENTER_BACKBONES = ("resnet50", "resnet101", "mobilenet_v3_large", "tiny")
EVAL_MODES = ("original", "sliding_window", "center_crop")
# Where enhance may replace a zero-shot label (train.losses.enhanced_label applies them).
ENHANCE_SCOPES = ("all", "background")


# UniMatch's random resize: the long side × U[0.5, 2.0] (dataset/transform.py resize).
UNIMATCH_SCALE: tuple[float, float] = (0.5, 2.0)


@dataclass
class SegModelConfig:
    """DeepLabV3+ as UniMatch builds it."""

    backbone: str = opt("resnet101", choices=SEGMENTER_BACKBONES, help="'tiny' = tests and CPU demo")
    pretrained: str | None = opt(None, help="local backbone state_dict (.pth); null = random init")
    num_classes: int | None = opt(None, ge=1, le=255, help="null = the number of data.classes")
    dilations: list[int] = opt(factory=lambda: [6, 12, 18], help="ASPP atrous rates (3)")
    replace_stride_with_dilation: list[bool] = opt(factory=lambda: [False, False, True])

    def validate(self, prefix: str) -> None:
        if len(self.dilations) != 3 or min(self.dilations) < 1:
            raise ConfigError(
                f"{prefix}.dilations", self.dilations, "need three rates >= 1", "e.g. [6, 12, 18]"
            )
        if len(self.replace_stride_with_dilation) != 3:
            raise ConfigError(
                f"{prefix}.replace_stride_with_dilation",
                self.replace_stride_with_dilation,
                "need three booleans",
                "e.g. [false, false, true] (output stride 16)",
            )


@dataclass
class TrainDataConfig:
    """A dataset source with UniMatch split files ('JPEGImages/x.jpg SegmentationClass/x.png' lines)."""

    source: str | None = opt(None, help="voc:DIR | synthetic:DIR | coco:DIR[:ANN.json] (data layer sources)")
    labeled: str = opt("labeled", help="labeled split: a file or a name found under the dataset root")
    unlabeled: str = opt("unlabeled", help="unlabeled split: a file or a name")
    val: str | None = opt("val", help="val split: a file or a name; null = no validation")
    classes: str = opt("auto", help="auto (the dataset's classes.txt) | voc | coco | a class file | a count")
    zero_shot: str | None = opt(None, help="folder of zero-shot labels <id>.png for the unlabeled split")
    enhanced: str | None = opt(None, help="folder of enhanced labels <id>.png (from enhance) for `train`")
    crop_size: int = opt(321, ge=16, le=4096, help="square training crop (UniMatch crop_size)")
    scale_range: list[float] = opt(
        factory=lambda: list(UNIMATCH_SCALE),
        help="random resize of the long side, × U[lo, hi] (UniMatch: 0.5–2.0)",
    )
    workers: int = opt(1, ge=0, le=64, help="DataLoader workers per process")
    preflight: bool = opt(True, help="check every image/label once before training (cached)")
    preflight_cache: str | None = opt(None, help="cache folder; null = $XDG_CACHE_HOME/zsplg-fast/preflight")
    max_long_side: int = opt(16384, ge=32, help="refuse images whose long side exceeds this")

    @property
    def scale(self) -> tuple[float, float]:
        """``scale_range`` as the (lo, hi) tuple the datasets take."""
        return (self.scale_range[0], self.scale_range[1])

    def validate(self, prefix: str) -> None:
        lo_hi = self.scale_range
        if len(lo_hi) != 2 or not 0 < lo_hi[0] <= lo_hi[1] <= 8:
            raise ConfigError(
                f"{prefix}.scale_range", lo_hi, "need [lo, hi] with 0 < lo <= hi <= 8", "e.g. [0.5, 2.0]"
            )


@dataclass
class OptimConfig:
    """SGD as upstream: momentum 0.9, wd 1e-4, head lr × lr_multi, poly decay per iteration."""

    lr: float = opt(0.001, gt=0.0, help="backbone lr at reference_batch images per step")
    lr_multi: float = opt(10.0, gt=0.0, help="head lr = lr × lr_multi")
    momentum: float = opt(0.9, ge=0.0, lt=1.0)
    weight_decay: float = opt(1e-4, ge=0.0)
    poly_power: float = opt(0.9, ge=0.0)
    lr_scaling: str = opt("linear", choices=("linear", "none"), help="scale lr by total batch / reference")
    reference_batch: int = opt(8, ge=1, help="total batch the lr was tuned for (upstream: 2 × 4 GPUs)")
    criterion: str = opt("ce", choices=("ce", "ohem"), help="labeled loss (upstream CELoss or OHEM)")
    ohem_thresh: float = opt(0.7, gt=0.0, le=1.0)
    ohem_min_kept: int = opt(200000, ge=0)


@dataclass
class UniMatchConfig:
    """The semi-supervised stage (follows UniMatch unimatch.py) and how zero-shot labels enter it."""

    epochs: int = opt(80, ge=1, help="passes over the unlabeled set")
    batch_size: int = opt(2, ge=1, help="per process, for each of the labeled and unlabeled batches")
    max_iters: int | None = opt(None, ge=1, help="schedule length in iterations; null = from epochs")
    conf_thresh: float = opt(0.95, ge=0.0, le=1.0, help="pseudo-label confidence threshold τ")
    fusion: str = opt(
        "online",
        choices=("online", "two_stage", "none"),
        help="online: below τ learn the zero-shot label; two_stage/none: plain UniMatch",
    )
    smoothing: float = opt(0.1, ge=0.0, lt=1.0, help="label smoothing ε of the zero-shot CE (online)")
    mix_order: str = opt(
        "official",
        choices=("official", "independent"),
        help="official: the mix batch reuses the unlabeled order (upstream's zip); independent: reshuffled",
    )


@dataclass
class SupervisedConfig:
    """Final supervised training on ground truth (+ enhanced labels), as upstream supervised.py."""

    epochs: int = opt(80, ge=1)
    batch_size: int = opt(2, ge=1, help="per process")
    max_iters: int | None = opt(None, ge=1, help="schedule length in iterations; null = from epochs")
    use_enhanced: bool = opt(True, help="add the unlabeled images with data.enhanced labels")


@dataclass
class EnhanceConfig:
    """Enhanced labels: confident UniMatch prediction, else the fallback."""

    threshold: float | None = opt(None, ge=0.0, le=1.0, help="null = unimatch.conf_thresh")
    fallback: str = opt(
        "zero_shot",
        choices=("zero_shot", "prediction", "ignore"),
        help="label of pixels below the threshold (zero_shot needs data.zero_shot)",
    )
    scope: str = opt(
        "all",
        choices=ENHANCE_SCOPES,
        help="where a confident prediction may replace the zero-shot label: everywhere, or only on "
        "zero-shot background (adds missed objects, never renames a named mask; needs fallback zero_shot)",
    )
    mode: str = opt("original", choices=EVAL_MODES, help="how predictions are made (full image by default)")

    def validate(self, prefix: str) -> None:
        check_enhance_scope(self.scope, self.fallback, f"{prefix}.scope")


def check_enhance_scope(scope: str, fallback: str, key: str = "train.enhance.scope") -> None:
    """Refuse an unknown scope, and scope 'background' (it adds to zero-shot labels) without the
    zero_shot fallback."""
    if scope not in ENHANCE_SCOPES:
        raise ConfigError(key, scope, "unknown scope", ", ".join(ENHANCE_SCOPES))
    if scope == "background" and fallback != "zero_shot":
        raise ConfigError(
            key,
            scope,
            f"adds to the zero-shot labels, so it needs fallback zero_shot (got {fallback})",
            "scope all, or fallback zero_shot",
        )


@dataclass
class EvalConfig:
    """Validation as upstream evaluate(): batch 1, 255 ignored, I/U summed over the dataset."""

    mode: str = opt("original", choices=EVAL_MODES, help="original = full image (UniMatch for VOC/COCO)")
    window: int | None = opt(None, ge=16, help="sliding-window / center-crop size; null = data.crop_size")
    every_epochs: int = opt(1, ge=0, help="evaluate on val after every N epochs (0 = only at the end)")


@dataclass
class RunConfig:
    """Device, precision, seeds, checkpoints."""

    device: str = opt("auto", help="auto | cpu | cuda | cuda:N (torchrun: the local rank's GPU)")
    amp: str = opt("auto", choices=("auto", "off", "fp16", "bf16"), help="auto = bf16 on CUDA, off on CPU")
    seed: int = opt(0, ge=0, help="data order, augmentations and init all derive from it")
    checkpoint_every: int = opt(0, ge=0, help="save latest.pth every N iterations (0 = at epoch ends)")
    stop_after: int | None = opt(None, ge=1, help="stop (with a checkpoint) after this iteration")
    log_every: int = opt(20, ge=1)
    threads: int | None = opt(None, ge=1, le=1024, help="torch.set_num_threads per process; null = torch's")


@dataclass
class TrainConfig:
    """The ``train:`` section of the root config."""

    model: SegModelConfig = field(default_factory=SegModelConfig)
    data: TrainDataConfig = field(default_factory=TrainDataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    unimatch: UniMatchConfig = field(default_factory=UniMatchConfig)
    supervised: SupervisedConfig = field(default_factory=SupervisedConfig)
    enhance: EnhanceConfig = field(default_factory=EnhanceConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    run: RunConfig = field(default_factory=RunConfig)
