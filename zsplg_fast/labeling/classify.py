"""Name each mask: pool dense CLIP features inside it, cosine-match to class-prompt embeddings."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from zsplg_fast.labeling.pooling import pool_masks

DenseFn = Callable[[torch.Tensor], torch.Tensor]
"""(1, 3, S, S) float32 normalised image → (1, D, h, w) L2-normalised dense features."""


def clip_preprocess(
    image: np.ndarray,
    size: int,
    mean: Sequence[float],
    std: Sequence[float],
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """(H, W, 3) uint8 RGB → (1, 3, size, size) float32, resized (squashed, antialiased), normalised.

    Squashing (no aspect-preserving pad) keeps every image pixel on the feature grid; masks are
    resized to the same grid, so pooling stays aligned.
    """
    return clip_normalise(clip_resize(image, size, device), mean, std)


def clip_resize(image: np.ndarray, size: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """(H, W, 3) uint8 RGB → (1, 3, size, size) float32 in [0, 1] (the first half of ``clip_preprocess``:
    a CPU stage can do it before the model, whose mean/std it need not know)."""
    arr = np.require(image, requirements=["C", "W"])  # copies only read-only / strided inputs
    x = torch.from_numpy(arr).to(device).permute(2, 0, 1)[None].float() / 255.0
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)


def clip_normalise(x: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """(B, 3, S, S) float32 in [0, 1] → normalised with CLIP's per-channel ``mean`` / ``std`` (0..1 scale)."""
    m = torch.tensor(mean, dtype=torch.float32, device=x.device).view(1, 3, 1, 1)
    s = torch.tensor(std, dtype=torch.float32, device=x.device).view(1, 3, 1, 1)
    return (x - m) / s


@dataclass
class Classification:
    """Per-mask result. All tensors have K rows.

    ``classes``: (K,) int64 final label index (0 = background when the score is below threshold);
    ``best``: (K,) int64 label index before thresholding; ``scores``: (K,) float32 softmax
    probability of ``best`` in [0, 1]; ``cosine``: (K,) float32 cosine of ``best`` in [-1, 1];
    ``margin``: (K,) float32 softmax probability of ``best`` minus that of the runner-up, in [0, 1]
    (1 when there is a single prompt; the review order reads it).
    """

    classes: torch.Tensor
    best: torch.Tensor
    scores: torch.Tensor
    cosine: torch.Tensor
    margin: torch.Tensor | None = None


class MaskClassifier:
    """Classify SAM masks with dense CLIP features and class-prompt embeddings.

    Args:
        dense: callable (1,3,S,S) → (1,D,h,w) L2-normalised features (a DenseClip module, or an
            adapter over a ``clip_dense`` engine).
        text_embeddings: (C', D) L2-normalised class-prompt embeddings.
        image_size: S; ``mean``/``std``: CLIP normalisation (RGB, for [0,1] inputs).
        logit_scale: softmax temperature applied to cosines (CLIP uses 100).
        score_threshold: a mask whose best softmax probability is below this becomes background.
        background_in_text: True if row 0 of ``text_embeddings`` is the background class; otherwise
            rows are classes 1..C'-ish and index 0 is only reached through the threshold.
    """

    def __init__(
        self,
        dense: DenseFn,
        text_embeddings: torch.Tensor,
        *,
        image_size: int,
        mean: Sequence[float],
        std: Sequence[float],
        logit_scale: float = 100.0,
        score_threshold: float = 0.0,
        background_in_text: bool = False,
        device: torch.device | str = "cpu",
    ) -> None:
        if text_embeddings.ndim != 2:
            raise ValueError(f"text_embeddings must be (C, D), got {tuple(text_embeddings.shape)}")
        self.dense = dense
        self.device = torch.device(device)
        self.text = F.normalize(text_embeddings.float(), dim=-1).to(self.device)
        self.image_size = int(image_size)
        self.mean = tuple(mean)
        self.std = tuple(std)
        self.logit_scale = float(logit_scale)
        self.score_threshold = float(score_threshold)
        self.offset = 0 if background_in_text else 1

    @property
    def num_classes(self) -> int:
        """C: label classes including background."""
        return self.text.shape[0] + self.offset

    @torch.no_grad()
    def features(self, image: np.ndarray) -> torch.Tensor:
        """(H, W, 3) uint8 → (D, h, w) float32 dense features on the classifier's device."""
        x = clip_preprocess(image, self.image_size, self.mean, self.std, self.device)
        return self.features_batch(x)[0]

    @torch.no_grad()
    def features_batch(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) float32 from :func:`clip_preprocess` → (B, D, h, w) float32 dense features."""
        f = self.dense(x.to(self.device))
        f = torch.as_tensor(f, device=self.device)
        if f.ndim != 4 or f.shape[0] != x.shape[0]:
            raise ValueError(f"dense features must be ({x.shape[0]}, D, h, w), got {tuple(f.shape)}")
        if f.shape[1] != self.text.shape[1]:
            raise ValueError(f"dense feature dim {f.shape[1]} != text embedding dim {self.text.shape[1]}")
        return f.float()

    @torch.no_grad()
    def classify(self, masks: torch.Tensor, features: torch.Tensor) -> Classification:
        """Classify K masks.

        Args:
            masks: (K, H, W) bool at image resolution.
            features: (D, h, w) from :meth:`features`.
        """
        k = masks.shape[0]
        if k == 0:
            z = torch.zeros(0, dtype=torch.int64, device=self.device)
            e = torch.zeros(0, dtype=torch.float32, device=self.device)
            return Classification(z, z.clone(), e, e.clone(), e.clone())
        pooled = pool_masks(masks.to(self.device), features)  # (K, D)
        cos = F.normalize(pooled, dim=-1) @ self.text.T  # (K, C')
        probs = torch.softmax(self.logit_scale * cos, dim=-1)
        score, idx = probs.max(dim=-1)
        best = idx + self.offset
        classes = torch.where(score >= self.score_threshold, best, torch.zeros_like(best))
        top2 = probs.topk(min(2, probs.shape[1]), dim=-1).values
        margin = top2[:, 0] - top2[:, 1] if top2.shape[1] > 1 else torch.ones_like(score)
        return Classification(classes, best, score, cos.gather(1, idx[:, None])[:, 0], margin)
