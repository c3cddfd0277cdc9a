"""With train.data.preflight=false a bad label still stops training on its first batch with one typed line
naming the label file (values out of range, size unlike the image), also from a DataLoader worker; and
evaluation's size-mismatch message names the mask, not the image."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from zsplg_fast.config.train import TrainConfig
from zsplg_fast.data.labels import write_label
from zsplg_fast.data.sources import open_source
from zsplg_fast.errors import SampleError
from zsplg_fast.train.supervised import train_supervised


@pytest.fixture
def copy(synth: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "ds"
    shutil.copytree(synth, dst)
    return dst


@pytest.mark.parametrize(("bad", "workers"), [("value", 1), ("size", 0)])
def test_training_without_preflight_names_the_bad_mask(
    copy: Path, tiny_cfg: Callable[..., TrainConfig], tmp_path: Path, bad: str, workers: int
) -> None:
    labeled = open_source(f"synthetic:{copy}", "labeled").samples
    for s in labeled:  # every labeled mask bad: the first batch meets one whatever the order
        arr = np.full((128, 128), 37, np.uint8) if bad == "value" else np.zeros((64, 128), np.uint8)
        write_label(s.label_path, arr)
    cfg = tiny_cfg(
        **{
            "data.source": f"synthetic:{copy}",
            "data.preflight": False,
            "data.workers": workers,
            "supervised.max_iters": 1,
        }
    )
    with pytest.raises(SampleError) as err:
        train_supervised(cfg, tmp_path / "run")
    msg = str(err.value)
    assert "\n" not in msg and "Traceback" not in msg and any(str(s.label_path) in msg for s in labeled), msg
    assert ("[37]" in msg) if bad == "value" else ("64x128" in msg and "128x128" in msg)


def test_evaluation_size_mismatch_names_the_mask(copy: Path) -> None:
    from zsplg_fast.models.segmenter import build_segmenter
    from zsplg_fast.train.evaluate import evaluate_model

    val = open_source(f"synthetic:{copy}", "val").samples[:2]
    write_label(val[1].label_path, np.zeros((100, 128), np.uint8))
    with pytest.raises(SampleError, match="label size 100x128") as err:
        evaluate_model(build_segmenter("tiny", 4).eval(), val, 4)
    assert str(err.value).startswith(str(val[1].label_path))
