"""Evaluation grids and the one-image segmenter path shared by evaluate, infer and the benchmark."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from zsplg_fast.bench.overlays import checkpoint_grid, pick
from zsplg_fast.bench.segmenter import EngineSegmenter, predict_label
from zsplg_fast.errors import ConfigError


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from zsplg_fast.models.segmenter import build_segmenter, save_checkpoint

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("seg") / "tiny.pth"
    save_checkpoint(path, build_segmenter("tiny", 4).eval(), ["background", "circle", "square", "triangle"])
    return path


@pytest.fixture(scope="module")
def ds_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from zsplg_fast.data.synthetic import generate_dataset

    out = tmp_path_factory.mktemp("ds") / "ds"
    generate_dataset(out, 8, num_classes=3, seed=1, size=64, val_fraction=0.5)
    return out


@pytest.fixture(scope="module")
def val_samples(ds_root: Path) -> list:
    from zsplg_fast.data import open_source

    return open_source(f"synthetic:{ds_root}", "val").samples


def test_pick_spreads_evenly() -> None:
    assert pick(list(range(10)), 3) == [0, 4, 9]
    assert pick([1, 2], 5) == [1, 2]
    with pytest.raises(ConfigError):
        pick([1], 0)


def test_checkpoint_grid_writes_a_png(tiny_ckpt: Path, val_samples: list, tmp_path: Path) -> None:
    path = checkpoint_grid(tiny_ckpt, val_samples, 3, tmp_path / "grid.png")
    with Image.open(path) as im:
        assert im.format == "PNG" and im.size[0] == 3 * (256 + 4) + 4 and im.size[1] > 3 * 256


def test_engine_segmenter_matches_the_module(tiny_ckpt: Path, val_samples: list) -> None:
    """An Engine wrapped as a module predicts what the module predicts (torch engine: identical)."""
    from zsplg_fast.engines.torch_engine import TorchEngine
    from zsplg_fast.export.specs import get_spec
    from zsplg_fast.models.segmenter import load_checkpoint

    model, _ = load_checkpoint(tiny_ckpt)
    p = get_spec("segmenter").bind(model)
    wrapped = EngineSegmenter(TorchEngine(p.module, p.inputs, p.outputs), 4)
    image = val_samples[0].load_image()
    np.testing.assert_array_equal(predict_label(wrapped, image), predict_label(model, image))
    assert predict_label(model, image).shape == image.shape[:2]


def test_evaluate_cli_writes_the_grid(tiny_ckpt: Path, ds_root: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from zsplg_fast.cli.main import app

    report = tmp_path / "eval.json"
    args = [
        "evaluate",
        "--checkpoint",
        str(tiny_ckpt),
        "--data",
        f"synthetic:{ds_root}",
        "--json",
        str(report),
    ]
    result = CliRunner().invoke(app, [*args, "--overlays", "2", "--set", "train.run.device=cpu"])
    assert result.exit_code == 0, result.output
    with Image.open(tmp_path / "eval.overlays.png") as im:
        assert im.format == "PNG" and im.size[1] > 2 * 256
    folder = ["evaluate", "--pred", str(tmp_path), "--gt", str(tmp_path), "--classes", "4", "--overlays", "2"]
    assert CliRunner().invoke(app, folder).exit_code != 0  # folder mode has no images to draw
