"""DeepLabV3+ as UniMatch builds it: the backbone registry and the network (``models/segmenter.py`` builds
it and reads and writes its checkpoints; import from there).

Follows UniMatch ``model/backbone/resnet.py`` (ResNet with the deep stem: three 3×3 convs, 128 channels
into layer1; dilation instead of stride in the last stage, output stride 16) and
``model/semseg/deeplabv3plus.py`` (ASPP 6/12/18, low-level reduce to 48, two 3×3 fuse convs, 1×1
classifier, bilinear upsampling with ``align_corners=True``; ``need_fp`` decodes clean and
Dropout2d(0.5)-perturbed features as one doubled batch). Parameter names match upstream, so the
official ``pretrained/resnet{50,101}.pth`` files and UniMatch checkpoints load.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from zsplg_fast.errors import ConfigError


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
