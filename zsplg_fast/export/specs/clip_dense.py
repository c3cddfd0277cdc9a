"""``clip_dense``: GEM dense CLIP features of the image tower.

Input ``image`` (B, 3, S, S) float32, CLIP-normalised ((x/255 - mean) / std); S is fixed per export
(``clip.image_size``, default 448) and a multiple of the patch p. Output ``features`` (B, D, S/p, S/p)
float32, unit L2 norm along D. The module is :class:`zsplg_fast.models.DenseClip` (no second copy).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from zsplg_fast.errors import ConfigError
from zsplg_fast.export.specs.base import ExportSpec, Prepared, randn, seeded
from zsplg_fast.export.tensors import AxisRange, TensorSpec, Tolerance
from zsplg_fast.models import ClipBundle, DenseClip


class ClipDense(nn.Module):
    """image (B, 3, S, S) float32 CLIP-normalised → features (B, D, S/p, S/p) float32 unit-norm."""

    def __init__(self, dense: DenseClip) -> None:
        super().__init__()
        self.dense = dense

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.dense(image)


def _small(module: nn.Module) -> bool:
    return sum(p.numel() for p in module.parameters()) < 20_000_000


def prepare_clip_dense(
    bundle: ClipBundle,
    image_size: int = 448,
    gem_depth: int = 1,
    gem_temperature: float | None = None,
    gem_iters: int = 1,
    validation_batches: tuple[int, ...] | None = None,
) -> Prepared:
    """Bind ``clip_dense`` to ``bundle`` (GEM settings as in ``ClipConfig``); dummy B=2."""
    p = bundle.patch_size
    if image_size % p:
        raise ConfigError("clip.image_size", image_size, f"must be a multiple of the patch size {p}")
    dense = DenseClip(bundle.visual, gem_depth, gem_temperature, gem_iters).eval()
    d, g = dense.out_dim, image_size // p
    batches = validation_batches or ((1, 7) if _small(dense) else (1, 3))
    gen = seeded(4)
    opts: dict[str, Any] = {
        "image_size": image_size,
        "gem_depth": gem_depth,
        "gem_temperature": gem_temperature,
        "gem_iters": gem_iters,
    }
    return Prepared(
        module=ClipDense(dense).eval(),
        inputs=(TensorSpec("image", "float32", ("batch", 3, image_size, image_size), allow_float64=True),),
        outputs=(TensorSpec("features", "float32", ("batch", d, g, g)),),
        dummy={"image": randn((2, 3, image_size, image_size), gen)},
        validation=[{"image": randn((b, 3, image_size, image_size), gen)} for b in batches],
        tolerances={"features": Tolerance(atol=1e-4, rtol=1e-3, min_cosine=0.99999)},
        profiles={"batch": AxisRange(1, 1, 16)},
        metadata={
            "preprocessing": {
                "size": image_size,
                "mean": list(bundle.mean),
                "std": list(bundle.std),
                "scale": "0..1",
            },
            "clip": {"model": bundle.name, "patch_size": p, "embed_dim": d, "grid": g, **opts},
        },
        options={**opts, "validation_batches": list(batches)},
    )


CLIP_DENSE = ExportSpec(
    "clip_dense",
    "clip",
    "GEM dense CLIP image features: (B,3,S,S) → (B,D,S/p,S/p) unit-norm",
    prepare_clip_dense,
    exporter="dynamo",
    exporter_reason="dynamo: lower RAM on ViT towers; both exporters validate (shared measurements)",
)
