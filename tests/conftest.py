"""Shared fixtures: a tiny open_clip config registered once, and small synthetic datasets."""

from __future__ import annotations

import json
import os
import warnings

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session", autouse=True)
def _hash_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    """The artifact hash cache (utils/integrity) in a temp folder, never the user's ~/.cache."""
    os.environ["ZSPLG_FAST_CACHE_DIR"] = str(tmp_path_factory.mktemp("hash-cache"))


TINY_CLIP = "tiny-clip-test"
TINY_CLIP_CFG = {
    "embed_dim": 64,
    "vision_cfg": {"image_size": 64, "layers": 2, "width": 64, "patch_size": 16, "head_width": 32},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}


@pytest.fixture(scope="session")
def tiny_clip_name(tmp_path_factory: pytest.TempPathFactory) -> str:
    """Register the tiny open_clip config (ViT 2×64, patch 16; text 2×64) and return its name."""
    from zsplg_fast.models import open_clip_config_builder, register_clip_model

    path = tmp_path_factory.mktemp("clip-config") / f"{TINY_CLIP}.json"
    path.write_text(json.dumps(TINY_CLIP_CFG))
    register_clip_model(TINY_CLIP, open_clip_config_builder(path))
    warnings.filterwarnings("ignore", message=".*RANDOM.*")
    return TINY_CLIP
