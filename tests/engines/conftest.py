"""A tiny SAM saved as a checkpoint and its batched decoder exported once (legacy exporter: ~1 s)."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import pytest
import torch


@pytest.fixture(scope="session")
def decoder_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from zsplg_fast.export.onnx import export_onnx
    from zsplg_fast.export.sources import load_sam
    from zsplg_fast.export.specs import get_spec
    from zsplg_fast.models import build_sam, save_sam_checkpoint

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("engines")
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ckpt = save_sam_checkpoint(build_sam("tiny"), root / "sam_tiny.pth")
    src = load_sam("tiny", ckpt)
    p = get_spec("sam_decoder_batched").bind(src.model)
    return export_onnx(p, root / "export", source=src.record).path


@pytest.fixture
def decoder_feeds() -> dict[str, Any]:
    import numpy as np

    g = np.random.default_rng(0)
    return {
        "image_embeddings": g.standard_normal((1, 128, 16, 16)).astype(np.float32),
        "point_coords": (g.random((5, 1, 2)) * 256).astype(np.float32),
        "point_labels": np.ones((5, 1), np.float32),
    }
