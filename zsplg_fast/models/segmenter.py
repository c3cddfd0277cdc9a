"""DeepLabV3+ segmenter as UniMatch builds it, with a registry of backbones and self-describing checkpoints.

Follows UniMatch ``model/backbone/resnet.py`` (ResNet with the deep stem: three 3×3 convs, 128 channels
into layer1; dilation instead of stride in the last stage, output stride 16) and
``model/semseg/deeplabv3plus.py`` (ASPP 6/12/18, low-level reduce to 48, two 3×3 fuse convs, 1×1
classifier, bilinear upsampling with ``align_corners=True``; ``need_fp`` decodes clean and
Dropout2d(0.5)-perturbed features as one doubled batch). Parameter names match upstream, so the
official ``pretrained/resnet{50,101}.pth`` files and UniMatch checkpoints load.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from zsplg_fast.errors import CheckpointError, ConfigError
from zsplg_fast.models.safe_load import load_torch_file
from zsplg_fast.utils.io import atomic_write_with

log = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "zsplg_fast.segmenter"
CHECKPOINT_VERSION = 1


@dataclass(frozen=True)
class BackboneSpec:
    """A ResNet-style backbone plus the head widths that go with it.

    ``stem``: the three deep-stem conv widths; ``planes``/``layers``: per-stage bottleneck widths and
    block counts; ``expansion``: bottleneck channel expansion; ``aspp``/``reduce``/``fuse``: head widths
    (upstream: in_channels // 8 = 256, 48, 256).
    """

    layers: tuple[int, int, int, int]
    planes: tuple[int, int, int, int] = (64, 128, 256, 512)
    stem: tuple[int, int, int] = (64, 64, 128)
    expansion: int = 4
    aspp: int = 256
    reduce: int = 48
    fuse: int = 256
    kind: str = "resnet"  # "resnet" (deep-stem ResNet) | "mobilenet_v3" (torchvision's, see MobileNetV3)
    channels: tuple[int, int] | None = None  # (low, high) when not a ResNet

    @property
    def low_channels(self) -> int:
        return self.channels[0] if self.channels else self.planes[0] * self.expansion

    @property
    def high_channels(self) -> int:
        return self.channels[1] if self.channels else self.planes[3] * self.expansion


BACKBONES: dict[str, BackboneSpec] = {
    "resnet50": BackboneSpec(layers=(3, 4, 6, 3)),
    "resnet101": BackboneSpec(layers=(3, 4, 23, 3)),
    # Small devices: torchvision's MobileNetV3-Large (dilated last stage: output stride 16), low-level
    # features after its first stride-4 block (24 ch), high-level 960 ch (as DeepLabV3+ mobile heads).
    "mobilenet_v3_large": BackboneSpec(layers=(0, 0, 0, 0), kind="mobilenet_v3", channels=(24, 960)),
    # Tests and the CPU demo: deep stem and OS16 kept, widths 16–64, one block per stage.
    "tiny": BackboneSpec(
        layers=(1, 1, 1, 1),
        planes=(16, 32, 48, 64),
        stem=(16, 16, 32),
        expansion=1,
        aspp=64,
        reduce=16,
        fuse=64,
    ),
}


@dataclass
class SegmenterConfig:
    """Everything needed to rebuild a segmenter; stored inside every checkpoint."""

    backbone: str
    num_classes: int
    dilations: tuple[int, int, int] = (6, 12, 18)
    replace_stride_with_dilation: tuple[bool, bool, bool] = (False, False, True)
    extra: dict[str, Any] = field(default_factory=dict)


def _bn_act(conv: nn.Module, ch: int) -> nn.Sequential:
    return nn.Sequential(conv, nn.BatchNorm2d(ch), nn.ReLU(True))


class Bottleneck(nn.Module):
    """ResNet v1.5 bottleneck (stride on the 3×3). x: (B, Cin, H, W) → (B, planes·expansion, H/s, W/s)."""

    def __init__(
        self, cin: int, planes: int, expansion: int, stride: int, dilation: int, downsample: nn.Module | None
    ) -> None:
        super().__init__()
        cout = planes * expansion
        self.conv1 = nn.Conv2d(cin, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, padding=dilation, dilation=dilation, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, cout, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        identity = self.downsample(x) if self.downsample is not None else x
        return self.relu(out + identity)


class ResNet(nn.Module):
    """Deep-stem ResNet (follows UniMatch resnet.py). ``base_forward`` returns (c1, c2, c3, c4)."""

    def __init__(self, spec: BackboneSpec, replace_stride_with_dilation: Sequence[bool]) -> None:
        super().__init__()
        s0, s1, s2 = spec.stem
        self.conv1 = nn.Sequential(
            nn.Conv2d(3, s0, 3, 2, 1, bias=False),
            nn.BatchNorm2d(s0),
            nn.ReLU(inplace=True),
            nn.Conv2d(s0, s1, 3, 1, 1, bias=False),
            nn.BatchNorm2d(s1),
            nn.ReLU(inplace=True),
            nn.Conv2d(s1, s2, 3, 1, 1, bias=False),
        )
        self.bn1 = nn.BatchNorm2d(s2)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        self._cin, self._dilation, self._exp = s2, 1, spec.expansion
        dil = [False, *replace_stride_with_dilation]
        for i in range(4):
            stage = self._make_layer(spec.planes[i], spec.layers[i], 1 if i == 0 else 2, dil[i])
            self.add_module(f"layer{i + 1}", stage)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)

    def _make_layer(self, planes: int, blocks: int, stride: int, dilate: bool) -> nn.Sequential:
        previous = self._dilation
        if dilate:
            self._dilation *= stride
            stride = 1
        cout = planes * self._exp
        down = None
        if stride != 1 or self._cin != cout:
            down = nn.Sequential(nn.Conv2d(self._cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
        mods = [Bottleneck(self._cin, planes, self._exp, stride, previous, down)]
        self._cin = cout
        mods += [Bottleneck(cout, planes, self._exp, 1, self._dilation, None) for _ in range(1, blocks)]
        return nn.Sequential(*mods)

    def base_forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """x: (B, 3, H, W) float normalised → c1 (B, C1, H/4, W/4), …, c4 (B, C4, H/16, W/16) at OS16."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        c1 = self.layer1(x)
        c2 = self.layer2(c1)
        c3 = self.layer3(c2)
        c4 = self.layer4(c3)
        return c1, c2, c3, c4


def _backbone(spec: BackboneSpec, replace_stride_with_dilation: Sequence[bool]) -> nn.Module:
    if spec.kind == "mobilenet_v3":
        from zsplg_fast.models.mobilenet import MobileNetV3

        return MobileNetV3()
    return ResNet(spec, replace_stride_with_dilation)


class ASPPPooling(nn.Module):
    """Image-level branch: global pool → 1×1 conv → BatchNorm → ReLU → upsample back to (h, w).

    After the global pool, BatchNorm sees one value per channel per image, so a training batch of one
    image (``batch_size: 1``) cannot be normalised by its own statistics (torch raises "Expected more
    than 1 value per channel"). For such a batch this branch's BatchNorm uses its running statistics
    instead (frozen, as TF DeepLab freezes BatchNorm for small batches; detectron2's ASPP drops the
    norm in this branch for the same reason); its affine weights still train. Batches of two or more,
    and SyncBatchNorm across processes, are normalised as usual. Weights and the exported graph
    (eval mode) are unchanged.
    """

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.gap = nn.Sequential(nn.AdaptiveAvgPool2d(1), *_bn_act(nn.Conv2d(cin, cout, 1, bias=False), cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, C, h, w) float → (B, cout, h, w) float."""
        pool, conv, bn, act = self.gap
        y = conv(pool(x))
        if self.training and y.shape[0] == 1 and not _synced(bn):
            y = F.batch_norm(y, bn.running_mean, bn.running_var, bn.weight, bn.bias, False, 0.0, bn.eps)
        else:
            y = bn(y)
        return F.interpolate(act(y), x.shape[-2:], mode="bilinear", align_corners=True)


def _synced(bn: nn.Module) -> bool:
    """A SyncBatchNorm that gathers statistics over more than one process (batch 1 each is fine)."""
    import torch.distributed as dist

    return (
        isinstance(bn, nn.SyncBatchNorm)
        and dist.is_available()
        and dist.is_initialized()
        and dist.get_world_size(bn.process_group) > 1
    )


class ASPPModule(nn.Module):
    """ASPP: 1×1, three dilated 3×3 and image pooling, concatenated and projected to ``cout``."""

    def __init__(self, cin: int, cout: int, rates: Sequence[int]) -> None:
        super().__init__()
        r1, r2, r3 = rates
        self.b0 = _bn_act(nn.Conv2d(cin, cout, 1, bias=False), cout)
        self.b1 = _bn_act(nn.Conv2d(cin, cout, 3, padding=r1, dilation=r1, bias=False), cout)
        self.b2 = _bn_act(nn.Conv2d(cin, cout, 3, padding=r2, dilation=r2, bias=False), cout)
        self.b3 = _bn_act(nn.Conv2d(cin, cout, 3, padding=r3, dilation=r3, bias=False), cout)
        self.b4 = ASPPPooling(cin, cout)
        self.project = _bn_act(nn.Conv2d(5 * cout, cout, 1, bias=False), cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.project(torch.cat([self.b0(x), self.b1(x), self.b2(x), self.b3(x), self.b4(x)], 1))


class DeepLabV3Plus(nn.Module):
    """DeepLabV3+ (follows UniMatch deeplabv3plus.py). Parameters outside ``backbone`` form the head group."""

    def __init__(self, config: SegmenterConfig) -> None:
        super().__init__()
        if config.backbone not in BACKBONES:
            raise ConfigError(
                "train.model.backbone", config.backbone, "unknown backbone", ", ".join(BACKBONES)
            )
        spec = BACKBONES[config.backbone]
        self.config = config
        self.backbone = _backbone(spec, config.replace_stride_with_dilation)
        self.head = ASPPModule(spec.high_channels, spec.aspp, config.dilations)
        self.reduce = _bn_act(nn.Conv2d(spec.low_channels, spec.reduce, 1, bias=False), spec.reduce)
        self.fuse = nn.Sequential(
            *_bn_act(nn.Conv2d(spec.aspp + spec.reduce, spec.fuse, 3, padding=1, bias=False), spec.fuse),
            *_bn_act(nn.Conv2d(spec.fuse, spec.fuse, 3, padding=1, bias=False), spec.fuse),
        )
        self.classifier = nn.Conv2d(spec.fuse, config.num_classes, 1, bias=True)

    def forward(
        self, x: torch.Tensor, need_fp: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """x: (B, 3, H, W) float normalised (ImageNet mean/std) → logits (B, C, H, W) float.

        With ``need_fp`` returns ``(logits, logits_fp)``: the fp branch decodes Dropout2d(0.5) of both the
        low-level (c1) and high-level (c4) features; clean and perturbed go through the decoder as one
        doubled batch, as upstream does (so BatchNorm sees both).
        """
        h, w = x.shape[-2:]
        feats = self.backbone.base_forward(x)
        c1, c4 = feats[0], feats[-1]
        if need_fp:
            c1 = torch.cat((c1, F.dropout2d(c1, 0.5, training=True)))
            c4 = torch.cat((c4, F.dropout2d(c4, 0.5, training=True)))
            out = F.interpolate(self._decode(c1, c4), (h, w), mode="bilinear", align_corners=True)
            clean, fp = out.chunk(2)
            return clean, fp
        return F.interpolate(self._decode(c1, c4), (h, w), mode="bilinear", align_corners=True)

    def _decode(self, c1: torch.Tensor, c4: torch.Tensor) -> torch.Tensor:
        c4 = F.interpolate(self.head(c4), c1.shape[-2:], mode="bilinear", align_corners=True)
        return self.classifier(self.fuse(torch.cat([self.reduce(c1), c4], 1)))


def _strip_prefixes(state: Mapping[str, torch.Tensor], prefixes: Sequence[str]) -> dict[str, torch.Tensor]:
    out = {}
    for k, v in state.items():
        for p in prefixes:
            if k.startswith(p):
                k = k[len(p) :]
        out[k] = v
    return out


def _read_state(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(p, "file not found; give the path of a saved .pth state_dict")
    obj = load_torch_file(p)  # weights_only=True with our allow-list; refuses code-running pickles
    if not isinstance(obj, dict):
        raise CheckpointError(p, f"expected a dict/state_dict, found {type(obj).__name__}")
    return obj


# Named backbone weights shipped with the project (the toy world's ``toy``): name → path getter.
BACKBONE_WEIGHTS: dict[str, Callable[[], Path]] = {}


def register_backbone_weights(name: str, path: Callable[[], Path]) -> None:
    """Make ``train.model.pretrained: <name>`` load ``path()`` (called, and checked, at build time)."""
    BACKBONE_WEIGHTS[name] = path


def resolve_backbone_weights(spec: str | Path) -> Path:
    """A registered name (plugins load on first need) before a file of that name; else the path, which
    then fails to load with a clear error."""
    if str(spec) not in BACKBONE_WEIGHTS and not Path(spec).is_file():
        from zsplg_fast.models.plugins import load_plugins

        load_plugins()
    getter = BACKBONE_WEIGHTS.get(str(spec))
    return getter() if getter is not None else Path(spec)


def load_backbone_weights(backbone: nn.Module, path: str | Path) -> dict[str, list[str]]:
    """Load a local backbone state_dict (upstream ``pretrained/resnet*.pth`` style) non-strictly.
    ``path`` may also be a registered name (``toy``: the toy world's shipped, sha256-checked backbone).

    Returns ``{"missing": [...], "unexpected": [...], "loaded": [...]}`` and logs the report; a key whose
    shape differs from the model is a :class:`CheckpointError` (wrong architecture).
    """
    path = resolve_backbone_weights(path)
    obj = _read_state(path)
    state = obj.get("state_dict", obj.get("model", obj))
    state = _strip_prefixes(state, ("module.", "backbone."))
    own = backbone.state_dict()
    bad = [k for k, v in state.items() if k in own and tuple(v.shape) != tuple(own[k].shape)]
    if bad:
        k = bad[0]
        raise CheckpointError(
            path,
            f"shape of '{k}' is {tuple(state[k].shape)}, model expects {tuple(own[k].shape)} "
            f"({len(bad)} mismatched keys); is this the right backbone?",
        )
    res = backbone.load_state_dict(state, strict=False)
    report = {
        "missing": list(res.missing_keys),
        "unexpected": list(res.unexpected_keys),
        "loaded": [k for k in state if k in own],
    }
    if not report["loaded"]:
        raise CheckpointError(path, "no key matches the backbone; is this a ResNet state_dict?")
    log.log(
        logging.WARNING if report["missing"] or report["unexpected"] else logging.INFO,
        "backbone weights %s: %d loaded, %d missing %s, %d unexpected %s",
        path,
        len(report["loaded"]),
        len(report["missing"]),
        report["missing"][:5],
        len(report["unexpected"]),
        report["unexpected"][:5],
    )
    return report


def build_segmenter(
    backbone: str,
    num_classes: int,
    pretrained: str | Path | None = None,
    dilations: Sequence[int] = (6, 12, 18),
    replace_stride_with_dilation: Sequence[bool] = (False, False, True),
) -> DeepLabV3Plus:
    """Build DeepLabV3+ on a registered backbone (``BACKBONES``); ``pretrained`` is a local backbone file."""
    if num_classes < 1:
        raise ConfigError("num_classes", num_classes, "must be >= 1")
    cfg = SegmenterConfig(
        backbone, int(num_classes), tuple(int(d) for d in dilations), tuple(replace_stride_with_dilation)
    )  # type: ignore[arg-type]
    model = DeepLabV3Plus(cfg)
    if pretrained is not None:
        load_backbone_weights(model.backbone, pretrained)
    return model


def unwrap(model: nn.Module) -> nn.Module:
    """The plain module inside DDP / DataParallel wrappers."""
    return getattr(model, "module", model)


def head_parameters(model: nn.Module) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """(backbone params, head params): the two SGD groups of upstream (head lr × lr_multi)."""
    named = list(unwrap(model).named_parameters())
    return [p for n, p in named if n.startswith("backbone.")], [
        p for n, p in named if not n.startswith("backbone.")
    ]


def save_checkpoint(
    path: str | Path,
    model: nn.Module,
    class_names: Sequence[str] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> None:
    """Write a self-describing checkpoint atomically: model config, weights, class names, ``extra``."""
    m = unwrap(model)
    cfg: SegmenterConfig = m.config  # type: ignore[assignment]
    state = {k.removeprefix("module."): v.detach().cpu() for k, v in m.state_dict().items()}
    obj = {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "model_config": asdict(cfg),
        "class_names": list(class_names) if class_names is not None else None,
        "state_dict": state,
        **dict(extra or {}),
    }
    atomic_write_with(path, lambda f: torch.save(obj, f))


def load_checkpoint(
    path: str | Path, map_location: str | torch.device = "cpu"
) -> tuple[DeepLabV3Plus, dict[str, Any]]:
    """Rebuild the segmenter from a checkpoint written by :func:`save_checkpoint`.

    Returns ``(model in eval mode, the checkpoint dict)``; the dict keeps ``class_names`` and any
    training state that was saved with it.
    """
    obj = _read_state(path)
    if obj.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(path, "not a zsplg-fast segmenter checkpoint (no model config inside)")
    c = obj["model_config"]
    model = build_segmenter(
        c["backbone"], c["num_classes"], None, c["dilations"], c["replace_stride_with_dilation"]
    )
    try:
        model.load_state_dict(obj["state_dict"], strict=True)
    except RuntimeError as e:
        raise CheckpointError(path, f"weights do not fit the stored model config: {e}") from e
    return model.to(map_location).eval(), obj
