"""Fixtures for the training tests: a small synthetic shapes dataset and tiny-backbone configs."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from zsplg_fast.config import load_config
from zsplg_fast.config.train import TrainConfig
from zsplg_fast.data.synthetic import generate_dataset


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    """Two shared cores: keep each test on one thread (conventions)."""
    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def synth(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """60 images of 128 px, 3 shape classes (+ background): 24 labeled, 24 unlabeled, 12 val."""
    out = tmp_path_factory.mktemp("synth") / "ds"
    generate_dataset(out, 60, num_classes=3, seed=3, size=128, val_fraction=0.2, labeled_fraction=0.5)
    return out


@pytest.fixture
def tiny_cfg(synth: Path, tmp_path: Path) -> Callable[..., TrainConfig]:
    """``tiny_cfg(**{"unimatch.max_iters": 3})`` → the train section for the tiny backbone on ``synth``."""

    def make(**overrides: Any) -> TrainConfig:
        base = {
            "data.source": f"synthetic:{synth}",
            "data.crop_size": 64,
            "data.workers": 0,
            "data.preflight_cache": str(tmp_path / "preflight"),
            "model.backbone": "tiny",
            "optim.lr": 0.02,
            "optim.lr_scaling": "none",
            "unimatch.batch_size": 2,
            "unimatch.fusion": "none",
            "supervised.batch_size": 4,
            "supervised.use_enhanced": False,
            "eval.every_epochs": 0,
            "run.device": "cpu",
            "run.log_every": 1000,
        }
        base.update(overrides)
        return load_config(None, {f"train.{k}": v for k, v in base.items()}).train

    return make
