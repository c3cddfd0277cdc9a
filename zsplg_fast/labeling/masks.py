"""Mask proposals: the common result type and the upstream reference generator."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Protocol

import numpy as np
import torch

from zsplg_fast.config import AmgConfig


@dataclass
class MaskSet:
    """Masks proposed for one image. K rows everywhere.

    ``masks``: (K, H, W) bool at image resolution; ``predicted_iou``: (K,) float32 in ~[0, 1];
    ``stability``: (K,) float32 in [0, 1]; ``boxes``: (K, 4) float32 XYWH in pixels.
    """

    masks: torch.Tensor
    predicted_iou: torch.Tensor
    stability: torch.Tensor
    boxes: torch.Tensor

    def __len__(self) -> int:
        return int(self.masks.shape[0])

    @classmethod
    def from_records(cls, records: list[dict[str, Any]], hw: tuple[int, int]) -> MaskSet:
        """Build from upstream ``SamAutomaticMaskGenerator.generate`` records (binary_mask mode)."""
        h, w = hw
        if not records:
            return cls(
                torch.zeros((0, h, w), dtype=torch.bool),
                torch.zeros(0),
                torch.zeros(0),
                torch.zeros((0, 4)),
            )
        masks = torch.from_numpy(np.stack([r["segmentation"] for r in records]).astype(bool))
        return cls(
            masks,
            torch.tensor([r["predicted_iou"] for r in records], dtype=torch.float32),
            torch.tensor([r["stability_score"] for r in records], dtype=torch.float32),
            torch.tensor([r["bbox"] for r in records], dtype=torch.float32),
        )


class MaskSource(Protocol):
    """Anything that proposes masks for an image."""

    def __call__(self, image: np.ndarray) -> MaskSet:
        """(H, W, 3) uint8 RGB → MaskSet."""
        ...


SAM2_ONLY_KEYS = ("mask_threshold", "multimask_output", "use_m2m")
"""AmgConfig keys of ``SAM2AutomaticMaskGenerator`` that segment-anything's generator does not take."""


class UpstreamMaskSource:
    """The reference: segment-anything's own ``SamAutomaticMaskGenerator`` with every AmgConfig knob."""

    def __init__(self, sam: torch.nn.Module, cfg: AmgConfig) -> None:
        from segment_anything import SamAutomaticMaskGenerator

        kw = {k: v for k, v in asdict(cfg).items() if k not in SAM2_ONLY_KEYS}
        self.generator = SamAutomaticMaskGenerator(sam, output_mode="binary_mask", **kw)

    def __call__(self, image: np.ndarray) -> MaskSet:
        records = self.generator.generate(image)
        return MaskSet.from_records(records, image.shape[:2])


def upstream_sam2_generator(model: torch.nn.Module, cfg: AmgConfig, output_mode: str = "binary_mask") -> Any:
    """sam2's own ``SAM2AutomaticMaskGenerator`` with every AmgConfig knob (the SAM 2 reference).

    ``SAM2ImagePredictor`` hard-codes the 1024-px models' feature sizes; they are set from ``model``
    (its ``sam_image_embedding_size`` g: 4g, 2g, g) so other input sizes (tests' tiny Hiera) run too.
    """
    from sam2.automatic_mask_generator import SAM2AutomaticMaskGenerator

    gen = SAM2AutomaticMaskGenerator(model, output_mode=output_mode, **asdict(cfg))
    g = int(model.sam_image_embedding_size)
    gen.predictor._bb_feat_sizes = [(4 * g, 4 * g), (2 * g, 2 * g), (g, g)]
    return gen


class UpstreamSam2MaskSource:
    """The SAM 2 reference mask source: :func:`upstream_sam2_generator` on a ``SAM2Base``."""

    def __init__(self, model: torch.nn.Module, cfg: AmgConfig) -> None:
        self.generator = upstream_sam2_generator(model, cfg)

    def __call__(self, image: np.ndarray) -> MaskSet:
        records = self.generator.generate(image)
        return MaskSet.from_records(records, image.shape[:2])
