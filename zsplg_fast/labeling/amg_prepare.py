"""The CPU half of SAM's pre-processing, split off so a CPU stage can do it away from the GPU.

``prepare_image`` cuts an image into AMG's crop boxes and resizes each crop's long side to S with PIL
bilinear, as ``ResizeLongestSide.apply_image`` does; what remains for the device (float, normalise,
zero-pad bottom-right, as ``Sam.preprocess``) is ``MaskGenerator.generate_prepared``'s. The local job
goes through the same two halves, so both executors feed the encoder the same numbers.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from PIL import Image

from zsplg_fast.config.labeling import AmgConfig
from zsplg_fast.errors import ConfigError
from zsplg_fast.labeling import amg_ops as ops


@dataclass
class PreparedCrop:
    """One crop: ``box`` [x0, y0, x1, y1] in the image, crop ``layer`` (0 = whole image) and
    ``resized``: (h', w', 3) uint8 RGB, the crop with its long side resized to S (not padded) for SAM;
    (3, S, S) float32 normalised for SAM 2 (the proposer's ``resize``)."""

    box: list[int]
    layer: int
    resized: np.ndarray


@dataclass
class PreparedImage:
    """An image as the encoder stage needs it: its (H, W) and its crops, resized on the CPU.
    ``display_hw`` is the size the label is written at when ``hw`` is a working resolution (None: same)."""

    hw: tuple[int, int]
    crops: list[PreparedCrop]
    display_hw: tuple[int, int] | None = None


def resize_longest(crop: np.ndarray, image_size: int) -> np.ndarray:
    """(h, w, 3) uint8 → (h', w', 3) uint8 with max(h', w') = ``image_size`` (PIL bilinear)."""
    new_h, new_w = ops.preprocess_shape(crop.shape[0], crop.shape[1], image_size)
    return np.array(Image.fromarray(np.ascontiguousarray(crop)).resize((new_w, new_h), Image.BILINEAR))


def prepare_image(
    image: np.ndarray,
    image_size: int,
    cfg: AmgConfig,
    resize: Callable[[np.ndarray, int], np.ndarray] = resize_longest,
) -> PreparedImage:
    """(H, W, 3) uint8 RGB → its AMG crops (``cfg.crop_n_layers``), each resized for an S×S encoder
    (``resize``: SAM's long side to S by default; a proposer's own, e.g. SAM 2's square float input).

    Raises:
        ConfigError: ``image`` is not (H, W, 3) uint8.
    """
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ConfigError("image", f"{image.dtype}{list(image.shape)}", "must be (H, W, 3) uint8 RGB")
    boxes, layers = ops.crop_boxes(image.shape[:2], cfg.crop_n_layers, cfg.crop_overlap_ratio)
    crops = [
        PreparedCrop(b, lay, resize(image[b[1] : b[3], b[0] : b[2]], image_size))
        for b, lay in zip(boxes, layers, strict=True)
    ]
    return PreparedImage((int(image.shape[0]), int(image.shape[1])), crops)
