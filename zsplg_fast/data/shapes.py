"""Drawing primitives of the synthetic shapes world: shape polygons, colours, backgrounds.

Used by ``zsplg_fast.data.synthetic``; masks are rasterised at the label resolution without
anti-aliasing, so a mask is exactly the set of pixels painted for an object.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageDraw

from zsplg_fast.errors import ConfigError

SHAPES: tuple[str, ...] = (
    "circle",
    "square",
    "triangle",
    "star",
    "ring",
    "cross",
    "hexagon",
    "heart",
    "diamond",
    "crescent",
)
# Object colours (name -> RGB). Independent of class; jittered per object.
OBJECT_COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (215, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 70, 210),
    "yellow": (235, 215, 40),
    "orange": (240, 140, 30),
    "purple": (130, 50, 170),
    "cyan": (40, 200, 215),
    "pink": (240, 120, 190),
    "white": (240, 240, 240),
    "black": (25, 25, 25),
    "brown": (130, 80, 40),
}
BG_BASES: tuple[tuple[int, int, int], ...] = (
    (128, 128, 128),
    (200, 190, 170),
    (90, 100, 110),
    (170, 200, 170),
    (160, 170, 210),
    (60, 60, 70),
    (210, 200, 210),
    (120, 100, 80),
)
BACKGROUND_KINDS: tuple[str, ...] = ("flat", "gradient", "noise", "stripes", "checker")


def shape_polygons(name: str, cx: float, cy: float, r: float, rot: float) -> list[list[tuple[float, float]]]:
    """Polygons of a shape; the first is filled, the rest (if any) are cut out. Coordinates in pixels."""

    def ring_pts(n: int, radius: float, phase: float = 0.0) -> np.ndarray:
        t = phase + rot + np.arange(n) * 2 * math.pi / n
        return np.stack([radius * np.cos(t), radius * np.sin(t)], 1)

    def place(p: np.ndarray, rotate: bool = True) -> list[tuple[float, float]]:
        if rotate:
            c, s = math.cos(rot), math.sin(rot)
            p = p @ np.array([[c, s], [-s, c]])
        return [(float(cx + x), float(cy + y)) for x, y in p]

    if name == "circle":
        return [place(ring_pts(72, r), rotate=False)]
    if name == "square":
        return [place(ring_pts(4, r * 0.92, math.pi / 4), rotate=False)]
    if name == "triangle":
        return [place(ring_pts(3, r, -math.pi / 2), rotate=False)]
    if name == "hexagon":
        return [place(ring_pts(6, r), rotate=False)]
    if name == "star":
        t = -math.pi / 2 + rot + np.arange(10) * math.pi / 5
        rad = np.where(np.arange(10) % 2 == 0, r, r * 0.42)
        return [place(np.stack([rad * np.cos(t), rad * np.sin(t)], 1), rotate=False)]
    if name == "ring":
        return [place(ring_pts(72, r), rotate=False), place(ring_pts(72, r * 0.55), rotate=False)]
    if name == "cross":
        a, b = r * 0.95, r * 0.32
        p = np.array([[-b, -a], [b, -a], [b, -b], [a, -b], [a, b], [b, b]])
        p = np.concatenate([p, -p])
        return [place(p)]
    if name == "diamond":
        return [place(np.array([[0, -r], [0.55 * r, 0], [0, r], [-0.55 * r, 0]]))]
    if name == "heart":
        t = np.linspace(0, 2 * math.pi, 80, endpoint=False)
        x = 16 * np.sin(t) ** 3
        y = -(13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t))
        return [place(np.stack([x, y + 2.5], 1) * (r / 16.5))]
    if name == "crescent":
        return [
            place(ring_pts(72, r), rotate=False),
            place(ring_pts(72, r * 0.8) + np.array([r * 0.45, -r * 0.1])),
        ]
    raise ConfigError("synthetic.shape", name, "unknown shape", valid=", ".join(SHAPES))


def shape_mask(name: str, cx: float, cy: float, r: float, rot: float, hw: tuple[int, int]) -> np.ndarray:
    """(H, W) bool mask of a shape rasterised at the label resolution (no anti-aliasing)."""
    h, w = hw
    canvas = Image.new("L", (w, h), 0)
    draw = ImageDraw.Draw(canvas)
    polys = shape_polygons(name, cx, cy, r, rot)
    draw.polygon(polys[0], fill=255)
    for hole in polys[1:]:
        draw.polygon(hole, fill=0)
    return np.asarray(canvas) > 127


def smooth_noise(rng: np.random.Generator, hw: tuple[int, int], cells: int) -> np.ndarray:
    """(H, W) float32 in [0, 1]: bilinearly upsampled random grid (low-frequency noise)."""
    h, w = hw
    grid = rng.random((cells + 1, cells + 1)).astype(np.float32)
    img = Image.fromarray((grid * 255).astype(np.uint8)).resize((w, h), Image.BILINEAR)
    return np.asarray(img, dtype=np.float32) / 255.0


def jitter(rng: np.random.Generator, rgb: tuple[int, int, int], amount: float) -> np.ndarray:
    return np.clip(np.asarray(rgb, np.float32) + rng.uniform(-amount, amount, 3), 0, 255)


def background(rng: np.random.Generator, hw: tuple[int, int]) -> np.ndarray:
    """(H, W, 3) float32 background in [0, 255]: flat, gradient, noise, stripes or checker."""
    h, w = hw
    kind = BACKGROUND_KINDS[int(rng.integers(len(BACKGROUND_KINDS)))]
    c1 = jitter(rng, BG_BASES[int(rng.integers(len(BG_BASES)))], 30)
    c2 = jitter(rng, BG_BASES[int(rng.integers(len(BG_BASES)))], 30)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    ang = rng.uniform(0, math.pi)
    proj = (xx * math.cos(ang) + yy * math.sin(ang)) / max(h, w)
    if kind == "flat":
        t = np.zeros((h, w), np.float32)
    elif kind == "gradient":
        t = (proj - proj.min()) / max(float(np.ptp(proj)), 1e-6)
    elif kind == "noise":
        t = smooth_noise(rng, hw, int(rng.integers(3, 12)))
    elif kind == "stripes":
        period = rng.uniform(0.04, 0.15)
        t = 0.5 + 0.5 * np.sin(2 * math.pi * proj / period).astype(np.float32)
    else:
        cell = rng.uniform(0.05, 0.15) * max(h, w)
        t = ((np.floor(xx / cell) + np.floor(yy / cell)) % 2).astype(np.float32)
    t = t * rng.uniform(0.25, 0.6)  # textures stay softer than objects
    return c1[None, None] * (1 - t[..., None]) + c2[None, None] * t[..., None]


def shading(rng: np.random.Generator, hw: tuple[int, int]) -> np.ndarray:
    """(H, W) float32 linear shading in about [-12, 12] added to an object's colour."""
    h, w = hw
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    ang = rng.uniform(0, 2 * math.pi)
    proj = (xx * math.cos(ang) + yy * math.sin(ang)) / max(h, w)
    return (proj - proj.mean()) * rng.uniform(0, 24)


# ---------------------------------------------------------------------------------------------------
