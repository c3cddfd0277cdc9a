"""Scenes of the shapes world with captions' ground truth, for training the toy CLIP.

A scene is a whole image or a random crop of one (zooming in on objects, with context), plus its
regions: each object's visible mask and the background mask. Each region carries a *fact* — (shape,
colour), or ("background", None) — and a caption *claim* is true of a region or an image when some
fact has the claimed shape (and colour, if the claim names one). The loss treats every true caption as
a positive (soft targets for duplicate captions).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from zsplg_fast.data.synthetic import WORLD_CLASSES, SynthSample, render_sample
from zsplg_fast.toy.clip import BACKGROUND_WORDS, TRAIN_TEMPLATES

Fact = tuple[str, "str | None"]  # (shape or "background", colour or None)
BACKGROUND_FACT: Fact = ("background", None)


@dataclass
class Scene:
    """image: (h, w, 3) uint8; regions: (R, h, w) bool (objects, then background); facts: R facts."""

    image: np.ndarray
    regions: np.ndarray
    facts: list[Fact]

    @property
    def image_facts(self) -> list[Fact]:
        """What is true of the whole image: its objects, or the background if it shows none."""
        objects = [f for f in self.facts if f[0] != "background"]
        return objects or [BACKGROUND_FACT]


def caption_true(claim: Fact, facts: list[Fact]) -> bool:
    """A claim (shape, colour|None) holds if some fact has that shape (and colour, if given)."""
    return any(claim[0] == s and (claim[1] is None or claim[1] == c) for s, c in facts)


def caption_for(rng: np.random.Generator, claim: Fact) -> str:
    """A caption making ``claim``: a random training template around '[colour] shape' or a background word."""
    shape, colour = claim
    template = TRAIN_TEMPLATES[int(rng.integers(len(TRAIN_TEMPLATES)))]
    if shape == "background":
        word = BACKGROUND_WORDS[int(rng.integers(len(BACKGROUND_WORDS)))]
        return template.replace("{}", word)
    return template.replace("{}", f"{colour} {shape}" if colour else shape)


def claim_of(rng: np.random.Generator, fact: Fact, p_colour: float) -> Fact:
    """The claim a caption about ``fact`` makes: the shape, with its colour with probability p_colour."""
    return (fact[0], fact[1] if fact[1] is not None and rng.random() < p_colour else None)


def make_scene(rng: np.random.Generator, s: SynthSample, p_crop: float) -> Scene:
    """The whole image, or with probability ``p_crop`` a random crop (45–90 % of each side).

    Objects keep a region if at least half of their visible area (and 64 px) lies inside the crop;
    the background region is kept if it covers at least 5 % of the scene.
    """
    h, w = s.label.shape
    y0, x0, ch, cw = 0, 0, h, w
    if rng.random() < p_crop:
        ch, cw = int(h * rng.uniform(0.45, 0.9)), int(w * rng.uniform(0.45, 0.9))
        y0, x0 = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
    win = (slice(y0, y0 + ch), slice(x0, x0 + cw))
    regions, facts = [], []
    for (cls, m), col in zip(s.instances, s.colours, strict=True):
        mc = m[win]
        if mc.sum() >= max(64, 0.5 * m.sum()):
            regions.append(mc)
            facts.append((WORLD_CLASSES[cls], col))
    bg = s.label[win] == 0
    if bg.mean() >= 0.05:
        regions.append(bg)
        facts.append(BACKGROUND_FACT)
    if not regions:  # a crop that cut every object: use the whole image
        return make_scene(rng, s, 0.0)
    return Scene(np.ascontiguousarray(s.image[win]), np.stack(regions), facts)


class ScenePool:
    """Rendered images kept in a pool; ``refresh`` replaces some, ``scenes`` samples a batch.

    Args:
        seed: image j of refresh round r comes from ``default_rng([seed, 31, r, j])``.
        num_classes: shapes 1..K of ``WORLD_CLASSES`` appear.
        pool_size: images kept.
    """

    def __init__(self, seed: int, num_classes: int, pool_size: int) -> None:
        self.seed, self.num_classes = seed, num_classes
        self.images = [self._render(0, j) for j in range(pool_size)]
        self.round = 0

    def _render(self, r: int, j: int) -> SynthSample:
        rng = np.random.default_rng([self.seed, 31, r, j])
        hw = (int(rng.integers(224, 321)), int(rng.integers(224, 321)))
        return render_sample(rng, hw, self.num_classes)

    def refresh(self, count: int) -> None:
        """Replace ``count`` images (round-robin), deterministically."""
        self.round += 1
        n = len(self.images)
        for j in range(count):
            self.images[(self.round * count + j) % n] = self._render(self.round, j)

    def scenes(self, rng: np.random.Generator, batch: int, p_crop: float) -> list[Scene]:
        """``batch`` scenes from random pool images."""
        return [
            make_scene(rng, self.images[int(rng.integers(len(self.images)))], p_crop) for _ in range(batch)
        ]
