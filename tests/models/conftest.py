"""Tiny open_clip models (custom configs) registered for the model tests, and single-threaded torch."""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from zsplg_fast.models import ClipBundle, build_clip, open_clip_config_builder, register_clip_model

TEXT_CFG = {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}
# ViT at 224 px with 32 px patches (7×7 grid), width 64, 4 heads: a "224-trained" model in miniature.
VIT_CFG = {"image_size": 224, "layers": 3, "width": 64, "head_width": 16, "patch_size": 32}
TINY_CONFIGS = {
    "zsplg-test-vit": {"embed_dim": 32, "vision_cfg": VIT_CFG, "text_cfg": TEXT_CFG},
    # open_clip's own Attention class (CustomResidualAttentionBlock), with the inner and post-attention norms.
    "zsplg-test-vit-custom": {
        "embed_dim": 32,
        "vision_cfg": {**VIT_CFG, "block_type": "custom", "scale_attn_inner": True, "scale_attn": True},
        "text_cfg": TEXT_CFG,
    },
    "zsplg-test-vit-qknorm": {
        "embed_dim": 32,
        "vision_cfg": {**VIT_CFG, "qk_norm": True},
        "text_cfg": TEXT_CFG,
    },
    # a ModifiedResNet image tower: no patch tokens, dense features must be refused.
    "zsplg-test-rn": {
        "embed_dim": 32,
        "vision_cfg": {"image_size": 64, "layers": [1, 1, 1, 1], "width": 16, "patch_size": None},
        "text_cfg": TEXT_CFG,
    },
}


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    """The CI box has 2 cores shared by several people: small work runs on one thread."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def clip_config_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with the tiny configs as JSON; each is registered under its file stem."""
    folder = tmp_path_factory.mktemp("open_clip_configs")
    for name, cfg in TINY_CONFIGS.items():
        path = folder / f"{name}.json"
        path.write_text(json.dumps(cfg))
        register_clip_model(name, open_clip_config_builder(path))
    return folder


def build_random(name: str) -> ClipBundle:
    """A random-init bundle, its (expected) warning silenced."""
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return build_clip(name)


@pytest.fixture(scope="session")
def random_clip(clip_config_dir: Path) -> Callable[[str], ClipBundle]:
    """``random_clip(name)``: a fresh random-init bundle of a registered tiny config (seed 0)."""
    return build_random


@pytest.fixture(scope="session")
def tiny_configs() -> dict[str, dict]:
    """The tiny open_clip model configs, by name."""
    return TINY_CONFIGS


@pytest.fixture(scope="session")
def tiny_clip(clip_config_dir: Path) -> ClipBundle:
    """Random-init tiny ViT CLIP (MultiheadAttention blocks). Tests must not modify it."""
    return build_random("zsplg-test-vit")


@pytest.fixture(scope="session")
def tiny_clip_custom(clip_config_dir: Path) -> ClipBundle:
    """Random-init tiny ViT CLIP with open_clip's custom Attention blocks. Tests must not modify it."""
    return build_random("zsplg-test-vit-custom")
