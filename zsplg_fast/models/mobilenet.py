"""MobileNetV3-Large as a DeepLabV3+ backbone for small devices (``backbone: mobilenet_v3_large``)."""

from __future__ import annotations

import torch
from torch import nn


class MobileNetV3(nn.Module):
    """torchvision ``mobilenet_v3_large(dilated=True)`` features (ImageNet-style init, no weights here;
    load them with ``pretrained``). ``base_forward`` returns (c1 (B, 24, H/4, W/4), c4 (B, 960, H/16,
    W/16)); parameter names are torchvision's ``features.*``."""

    def __init__(self) -> None:
        super().__init__()
        from torchvision.models import mobilenet_v3_large

        self.features = mobilenet_v3_large(weights=None, dilated=True).features

    def base_forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        c1 = self.features[:4](x)
        return c1, self.features[4:](c1)
