"""Tiny models saved as checkpoints, and every spec exported once per session through ``run_export``."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch

TINY_CLIP = "tiny-clip-export-test"
TINY_CLIP_CFG = {
    "embed_dim": 64,
    "vision_cfg": {"image_size": 64, "layers": 2, "width": 64, "patch_size": 16, "head_width": 32},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}
CLIP_SIZE = 96  # clip_dense input: 6×6 grid of 16 px patches


@pytest.fixture(scope="session", autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)  # 2 shared cores: keep small work single-threaded
    warnings.filterwarnings("ignore", message=".*RANDOM.*")


@pytest.fixture(scope="session")
def weights_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("weights")


@pytest.fixture(scope="session")
def tiny_sam_ckpt(weights_dir: Path) -> Path:
    from zsplg_fast.models import build_sam, save_sam_checkpoint

    torch.manual_seed(0)
    return save_sam_checkpoint(build_sam("tiny"), weights_dir / "sam_tiny.pth")


@pytest.fixture(scope="session")
def tiny_sam(tiny_sam_ckpt: Path) -> Any:
    from zsplg_fast.models import build_sam

    return build_sam("tiny", tiny_sam_ckpt)


@pytest.fixture(scope="session")
def tiny_clip_ckpt(weights_dir: Path) -> Path:
    from zsplg_fast.models import (
        build_clip,
        open_clip_config_builder,
        register_clip_model,
        save_clip_checkpoint,
    )

    cfg = weights_dir / f"{TINY_CLIP}.json"
    cfg.write_text(json.dumps(TINY_CLIP_CFG))
    register_clip_model(TINY_CLIP, open_clip_config_builder(cfg))
    torch.manual_seed(0)
    return save_clip_checkpoint(build_clip(TINY_CLIP).model, weights_dir / "clip_tiny.pt")


@pytest.fixture(scope="session")
def tiny_clip(tiny_clip_ckpt: Path) -> Any:
    from zsplg_fast.models import build_clip

    return build_clip(TINY_CLIP, tiny_clip_ckpt)


@pytest.fixture(scope="session")
def tiny_segmenter_ckpt(weights_dir: Path) -> Path:
    from zsplg_fast.models.segmenter import build_segmenter, save_checkpoint

    torch.manual_seed(0)
    model = build_segmenter("tiny", 4).eval()
    path = weights_dir / "segmenter_tiny.pth"
    save_checkpoint(path, model, class_names=["background", "circle", "square", "star"])
    return path


@pytest.fixture(scope="session")
def export_cfg(
    tmp_path_factory: pytest.TempPathFactory,
    tiny_sam_ckpt: Path,
    tiny_clip_ckpt: Path,
    tiny_segmenter_ckpt: Path,
) -> Any:
    from zsplg_fast.config import load_config

    out = tmp_path_factory.mktemp("export")
    return load_config(
        None,
        {
            "sam.variant": "tiny",
            "sam.checkpoint": str(tiny_sam_ckpt),
            "clip.model": TINY_CLIP,
            "clip.pretrained": str(tiny_clip_ckpt),
            "clip.image_size": CLIP_SIZE,
            "clip.gem_depth": 1,
            "export.out_dir": str(out),
            "export.with_preprocess": True,
            "export.classes": "voc",
            "export.segmenter_checkpoint": str(tiny_segmenter_ckpt),
        },
    )


@pytest.fixture(scope="session")
def exported(export_cfg: Any) -> dict[str, Any]:
    """``zsplg-fast export all`` on the tiny models (the library call the CLI makes): name → row."""
    from zsplg_fast.export.pipeline import run_export

    rows = run_export("all", export_cfg)
    return {r.name: r for r in rows}
