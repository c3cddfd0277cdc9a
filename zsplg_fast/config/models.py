"""Model sections of the config: SAM, CLIP."""

from __future__ import annotations

from dataclasses import dataclass

from zsplg_fast.config.fields import opt

SAM2_VARIANTS = (
    *(f"sam2.1_hiera_{s}" for s in ("t", "s", "b+", "l")),
    *(f"sam2_hiera_{s}" for s in ("t", "s", "b+", "l")),
    "sam2_tiny",
)
"""SAM 2 / 2.1 (the ``[sam2]`` extra); ``sam2_tiny`` is a small Hiera for tests."""
SAM_VARIANTS = ("vit_h", "vit_l", "vit_b", "tiny", "toy", *SAM2_VARIANTS)


@dataclass
class SamConfig:
    """Which SAM to build and which weights to load."""

    variant: str = opt(
        "vit_b",
        choices=SAM_VARIANTS,
        help="SAM vit_h|l|b; SAM 2.1 sam2.1_hiera_t|s|b+|l (extra [sam2]); 'toy' = toy-world weights",
    )
    checkpoint: str | None = opt(
        None, help="official .pth (SAM) / .pt (SAM 2, {'model': state_dict}); null = random init (warned)"
    )


@dataclass
class ClipConfig:
    """open_clip model, its weights, and the GEM dense-feature settings."""

    model: str = opt("ViT-B-16", help="open_clip model name (or 'toy')")
    pretrained: str | None = opt(None, help="open_clip tag or a local file; null = random init (warned)")
    image_size: int = opt(448, ge=32, le=2048, help="dense-feature input size (square)")
    gem_depth: int = opt(
        6,
        ge=0,
        le=48,
        help="last k ViT blocks get the GEM self-self path (0 = plain; GEM default depth 7 = 6 here)",
    )
    gem_temperature: float | None = opt(
        None,
        gt=0,
        help="GEM inverse temperature (multiplies cosine logits, as ss_attn_temp); null = from token norm",
    )
    gem_iters: int = opt(1, ge=1, le=8, help="self-self attention iterations per GEM block")
    templates: list[str] = opt(factory=lambda: ["a photo of a {}."], help="prompt templates, '{}' = class")

    def validate(self, prefix: str) -> None:
        from zsplg_fast.errors import ConfigError

        for i, t in enumerate(self.templates):
            if "{}" not in t:
                raise ConfigError(f"{prefix}.templates[{i}]", t, "template must contain '{}'")
