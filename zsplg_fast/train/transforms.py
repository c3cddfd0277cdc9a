"""UniMatch augmentations, driven by an explicit ``numpy.random.Generator`` (so resume is exact).

Follows UniMatch ``dataset/transform.py`` (resize by the long side in [0.5, 2.0]·L, pad-then-crop with
0 / ignore fill, hflip p 0.5, Gaussian blur σ ∈ [0.1, 2] p 0.5, CutMix box p 0.5 with area 2–40 % and
aspect 0.3–1/0.3) and ``dataset/semi.py`` (strong view: ColorJitter(0.5, 0.5, 0.5, 0.25) p 0.8,
RandomGrayscale p 0.2, blur). Randomness comes from the given generator instead of the global
``random`` / ``torch`` state; the distributions are the same.
"""

from __future__ import annotations

import numpy as np
import torch
import torchvision.transforms.functional as TF
from PIL import Image, ImageFilter, ImageOps

from zsplg_fast.config.train import UNIMATCH_SCALE

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
PAD_LABELED = 255
PAD_UNLABELED = 254


def random_resize(
    img: Image.Image, mask: Image.Image, rng: np.random.Generator, ratio: tuple[float, float] = UNIMATCH_SCALE
) -> tuple[Image.Image, Image.Image]:
    """Rescale so the long side is an integer drawn uniformly in [L·r0, L·r1]; bilinear / nearest."""
    w, h = img.size
    long_side = int(rng.integers(int(max(h, w) * ratio[0]), int(max(h, w) * ratio[1]) + 1))
    if h > w:
        oh, ow = long_side, int(w * long_side / h + 0.5)
    else:
        ow, oh = long_side, int(h * long_side / w + 0.5)
    return img.resize((ow, oh), Image.BILINEAR), mask.resize((ow, oh), Image.NEAREST)


def random_crop(
    img: Image.Image, mask: Image.Image, size: int, rng: np.random.Generator, fill: int
) -> tuple[Image.Image, Image.Image]:
    """Pad right/bottom to ``size`` (image with 0, mask with ``fill``) then take a random size×size crop."""
    w, h = img.size
    padw, padh = max(size - w, 0), max(size - h, 0)
    img = ImageOps.expand(img, border=(0, 0, padw, padh), fill=0)
    mask = ImageOps.expand(mask, border=(0, 0, padw, padh), fill=fill)
    w, h = img.size
    x, y = int(rng.integers(0, w - size + 1)), int(rng.integers(0, h - size + 1))
    box = (x, y, x + size, y + size)
    return img.crop(box), mask.crop(box)


def random_hflip(
    img: Image.Image, mask: Image.Image, rng: np.random.Generator, p: float = 0.5
) -> tuple[Image.Image, Image.Image]:
    """Mirror both left-right with probability ``p``."""
    if rng.random() < p:
        return img.transpose(Image.FLIP_LEFT_RIGHT), mask.transpose(Image.FLIP_LEFT_RIGHT)
    return img, mask


def weak(
    img: Image.Image,
    mask: Image.Image,
    size: int,
    rng: np.random.Generator,
    fill: int,
    scale: tuple[float, float] = UNIMATCH_SCALE,
) -> tuple[Image.Image, Image.Image]:
    """The weak (geometric) pipeline shared by labeled and unlabeled samples: resize (long side × U[scale]),
    crop, flip."""
    img, mask = random_resize(img, mask, rng, scale)
    img, mask = random_crop(img, mask, size, rng, fill)
    return random_hflip(img, mask, rng)


def color_jitter(
    img: Image.Image,
    rng: np.random.Generator,
    brightness: float = 0.5,
    contrast: float = 0.5,
    saturation: float = 0.5,
    hue: float = 0.25,
) -> Image.Image:
    """torchvision ColorJitter semantics: factors drawn uniformly, the four ops applied in random order."""
    order = rng.permutation(4)
    b = rng.uniform(1 - brightness, 1 + brightness)
    c = rng.uniform(1 - contrast, 1 + contrast)
    s = rng.uniform(1 - saturation, 1 + saturation)
    hf = rng.uniform(-hue, hue)
    ops = (
        lambda im: TF.adjust_brightness(im, b),
        lambda im: TF.adjust_contrast(im, c),
        lambda im: TF.adjust_saturation(im, s),
        lambda im: TF.adjust_hue(im, hf),
    )
    for i in order:
        img = ops[int(i)](img)
    return img


def blur(img: Image.Image, rng: np.random.Generator, p: float = 0.5) -> Image.Image:
    """PIL Gaussian blur with radius σ ~ U[0.1, 2.0], with probability ``p``."""
    if rng.random() < p:
        return img.filter(ImageFilter.GaussianBlur(radius=float(rng.uniform(0.1, 2.0))))
    return img


def strong(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    """One strong view: colour jitter p 0.8, grayscale p 0.2, blur p 0.5 (CutMix box drawn separately)."""
    if rng.random() < 0.8:
        img = color_jitter(img, rng)
    if rng.random() < 0.2:
        img = TF.rgb_to_grayscale(img, num_output_channels=3)
    return blur(img, rng)


def cutmix_box(
    size: int,
    rng: np.random.Generator,
    p: float = 0.5,
    area: tuple[float, float] = (0.02, 0.4),
    ratio: tuple[float, float] = (0.3, 1 / 0.3),
) -> torch.Tensor:
    """(size, size) float32 in {0, 1}: a box of area ~ U[2 %, 40 %] of the crop, aspect ~ U[0.3, 1/0.3],
    placed where it fits, with probability ``p`` (else all zeros)."""
    box = torch.zeros(size, size)
    if rng.random() > p:
        return box
    target = rng.uniform(*area) * size * size
    while True:
        r = rng.uniform(*ratio)
        bw, bh = int(np.sqrt(target / r)), int(np.sqrt(target * r))
        x, y = int(rng.integers(0, size)), int(rng.integers(0, size))
        if x + bw <= size and y + bh <= size:
            break
    box[y : y + bh, x : x + bw] = 1
    return box


def normalize(img: Image.Image) -> torch.Tensor:
    """(H, W) RGB PIL → (3, H, W) float32, ImageNet mean/std normalised."""
    return TF.normalize(TF.to_tensor(img), MEAN, STD)


def to_mask(mask: Image.Image | np.ndarray) -> torch.Tensor:
    """Label image → (H, W) int64 class indices (255 ignore, 254 padding of unlabeled crops)."""
    return torch.from_numpy(np.array(mask, dtype=np.uint8)).long()
