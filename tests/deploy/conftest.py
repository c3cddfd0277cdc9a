"""A tiny segmenter trained briefly on synthetic shapes (the training engineer's API), and its INT8 deploy
folder, shared by the deploy and infer tests (session scope: trained and deployed once)."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch


@pytest.fixture(scope="session", autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)  # 2 shared cores


@pytest.fixture(scope="session")
def shapes_ds(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """48 images of 96 px, 3 shape classes + background: 36 labeled (train + calibration), 12 val."""
    from zsplg_fast.data.synthetic import generate_dataset

    out = tmp_path_factory.mktemp("shapes") / "ds"
    generate_dataset(out, 48, num_classes=3, seed=3, size=96, val_fraction=0.25, labeled_fraction=1.0)
    return out


@pytest.fixture(scope="session")
def trained_ckpt(shapes_ds: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``train_supervised`` on the tiny backbone for 100 iterations (≈ 15 s on one core)."""
    from zsplg_fast.config import load_config
    from zsplg_fast.train.supervised import train_supervised

    root = tmp_path_factory.mktemp("train")
    settings = {
        "data.source": f"synthetic:{shapes_ds}",
        "data.crop_size": 64,
        "data.workers": 0,
        "data.preflight_cache": str(root / "preflight"),
        "model.backbone": "tiny",
        "optim.lr": 0.02,
        "optim.lr_scaling": "none",
        "supervised.batch_size": 8,
        "supervised.max_iters": 100,
        "supervised.use_enhanced": False,
        "eval.every_epochs": 0,
        "run.device": "cpu",
        "run.threads": 1,
        "run.log_every": 1000,
    }
    cfg = load_config(None, {f"train.{k}": v for k, v in settings.items()}).train
    result = train_supervised(cfg, root / "run")
    return Path(result["checkpoint"])


@pytest.fixture(scope="session")
def deploy_config(trained_ckpt: Path, shapes_ds: Path) -> Callable[..., Any]:
    """``deploy_config(out, **overrides)`` → a DeployConfig for the trained tiny segmenter."""
    from zsplg_fast.config.bench import DeployConfig
    from zsplg_fast.config.loader import from_dict

    def make(out: Path, **overrides: Any) -> DeployConfig:
        base = {
            "checkpoint": str(trained_ckpt),
            "precision": "int8",
            "calib": f"synthetic:{shapes_ds}",
            "calib_split": "labeled",
            "calib_images": 12,
            "val": f"synthetic:{shapes_ds}",
            "val_split": "val",
            "exporter": "legacy",
            "latency_size": "96",
            "latency_budget_s": 0.2,
            "threads": 1,
            "out": str(out),
        }
        return from_dict(DeployConfig, {**base, **overrides})

    return make


@pytest.fixture(scope="session")
def int8_deploy(
    deploy_config: Callable[..., Any], tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, dict]:
    """(deploy folder, deploy() result) of the trained segmenter at INT8, drop limit 5 points."""
    from zsplg_fast.deploy import deploy

    out = tmp_path_factory.mktemp("deploy") / "seg-int8"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = deploy(deploy_config(out, max_miou_drop=5.0))
    return out, result
