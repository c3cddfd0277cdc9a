"""Data preflight: every file checked once, failures named, clean results cached by fingerprint."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from zsplg_fast.config.train import TrainConfig
from zsplg_fast.data.labels import write_label
from zsplg_fast.data.sources import open_source
from zsplg_fast.errors import DatasetError
from zsplg_fast.train.preflight import preflight
from zsplg_fast.train.supervised import train_supervised


@pytest.fixture
def copy(synth: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "ds"
    shutil.copytree(synth, dst)
    return dst


def test_clean_dataset_is_cached(copy: Path, tmp_path: Path) -> None:
    samples = open_source(f"synthetic:{copy}", "labeled").samples
    first = preflight(samples, 4, tmp_path / "cache")
    assert first["checked"] == len(samples) and not first["cached"]
    assert preflight(samples, 4, tmp_path / "cache")["cached"]
    # touching a file changes the fingerprint: checked again
    write_label(samples[0].label_path, np.zeros((128, 128), np.uint8))
    assert not preflight(samples, 4, tmp_path / "cache")["cached"]


def test_bad_files_are_named_and_listed(copy: Path, tmp_path: Path) -> None:
    samples = open_source(f"synthetic:{copy}", "labeled").samples
    img = samples[1].image_path
    img.write_bytes(img.read_bytes()[:200])  # truncated JPEG
    write_label(samples[2].label_path, np.full((128, 128), 9, np.uint8))  # class 9 of 4
    write_label(samples[3].label_path, np.zeros((64, 128), np.uint8))  # size mismatch
    with pytest.raises(DatasetError, match=r"3 problems in \d+ samples") as e:
        preflight(samples, 4, tmp_path / "cache")
    listed = next((tmp_path / "cache").glob("*.errors.json")).read_text()
    for p in (img, samples[2].label_path, samples[3].label_path):
        assert str(p) in listed
    assert str(img) in str(e.value)


def test_missing_zero_shot_labels_are_counted(copy: Path, tmp_path: Path) -> None:
    samples = open_source(f"synthetic:{copy}", "unlabeled").samples
    shutil.copytree(copy / "SegmentationClass", tmp_path / "zs")
    extra = {s.id: tmp_path / "zs" / f"{s.id}.png" for s in samples}
    extra[samples[0].id].unlink()
    assert preflight(samples, 4, tmp_path / "c", extra)["missing_extra"] == 1


def test_training_refuses_bad_data_before_starting(
    copy: Path, tiny_cfg: Callable[..., TrainConfig], tmp_path: Path
) -> None:
    val = open_source(f"synthetic:{copy}", "val").samples
    val[0].label_path.write_bytes(b"not a png")
    cfg = tiny_cfg(**{"data.source": f"synthetic:{copy}", "supervised.max_iters": 1})
    with pytest.raises(DatasetError, match="preflight"):
        train_supervised(cfg, tmp_path / "run")
    assert not (tmp_path / "run" / "latest.pth").exists()
