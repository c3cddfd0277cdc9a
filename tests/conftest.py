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


TOY_CI = os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "zsplg_fast", "configs", "toy_ci.yaml"
)


@pytest.fixture(scope="session")
def sam2_tiny_ckpt(tmp_path_factory: pytest.TempPathFactory):  # -> Path
    """A random SAM 2 ``sam2_tiny`` (Hiera embed 32, 256 px; seed 5) saved in the official ``{"model": sd}``
    .pt layout, shared by the SAM 2 label / pipeline / review tests. Skips without the [sam2] extra."""
    pytest.importorskip("sam2", reason="the [sam2] extra is not installed")
    import torch

    from zsplg_fast.models import build_sam, save_sam_checkpoint

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.manual_seed(5)
        return save_sam_checkpoint(build_sam("sam2_tiny"), tmp_path_factory.mktemp("sam2") / "sam2_tiny.pt")


@pytest.fixture(scope="session")
def sam2_toy_engines(sam2_tiny_ckpt, tmp_path_factory: pytest.TempPathFactory):  # -> Path
    """What ``label --backend ort`` runs for ``--sam sam2_tiny --clip toy`` (toy_ci.yaml), exported once
    through the CLI: ``sam2_encoder`` + ``sam2_decoder_batched`` (legacy exporter: 6 s, not 28; the same
    parity) and the toy ``clip_dense``."""
    from typer.testing import CliRunner

    from zsplg_fast.cli.main import app

    out = tmp_path_factory.mktemp("sam2-engines")
    sam = ["--sam", "sam2_tiny", "--sam-checkpoint", str(sam2_tiny_ckpt), "--set", "export.exporter=legacy"]
    sam += ["--only", "sam2_encoder", "--only", "sam2_decoder_batched"]
    for what, extra in (("sam", sam), ("clip", [])):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            res = CliRunner().invoke(app, ["export", what, "--config", TOY_CI, *extra, "--out", str(out)])
        assert res.exit_code == 0, res.output
    return out
