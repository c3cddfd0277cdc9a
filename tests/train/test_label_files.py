"""Label files named right: a mask saved as .jpg (labels must be PNG) in training and folder evaluation,
and a size mismatch naming both the prediction and the ground-truth file."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from zsplg_fast.cli.main import main
from zsplg_fast.config.train import TrainConfig
from zsplg_fast.data.labels import read_label, write_label
from zsplg_fast.errors import DatasetError, LabelFormatError
from zsplg_fast.train.evaluate import evaluate_folders
from zsplg_fast.train.supervised import train_supervised


def _png_to_jpg(png: Path) -> Path:
    jpg = png.with_suffix(".jpg")
    Image.fromarray(read_label(png)).save(jpg, format="JPEG")
    png.unlink()
    return jpg


def test_train_names_the_jpg_mask_beside_the_missing_png(
    synth: Path, tiny_cfg: Callable[..., TrainConfig], tmp_path: Path
) -> None:
    copy = tmp_path / "ds"
    shutil.copytree(synth, copy)
    line = (copy / "splits" / "labeled.txt").read_text().splitlines()[0]
    jpg = _png_to_jpg(copy / line.split()[1])
    cfg = tiny_cfg(**{"data.source": f"synthetic:{copy}", "supervised.max_iters": 1})
    with pytest.raises(DatasetError, match=rf"found {jpg.name} beside it: labels must be PNG"):
        train_supervised(cfg, tmp_path / "run")
    assert not (tmp_path / "run" / "final.pth").exists()


def test_voc_ids_attach_the_jpg_mask_so_reading_it_names_it(synth: Path, tmp_path: Path) -> None:
    from zsplg_fast.data.sources import open_source

    copy = tmp_path / "ds"
    shutil.copytree(synth, copy)
    sid = sorted(p.stem for p in (copy / "SegmentationClass").glob("*.png"))[0]
    jpg = _png_to_jpg(copy / "SegmentationClass" / f"{sid}.png")
    (copy / "ids.txt").write_text(f"{sid}\n")
    for src in (open_source(f"voc:{copy}", "ids.txt"), open_source(f"voc:{copy}")):
        sample = next(s for s in src if s.id == sid)
        assert sample.label_path == jpg
        with pytest.raises(LabelFormatError, match="labels must be PNG: this file's content is JPEG"):
            sample.load_label()


def test_evaluate_gt_folder_refuses_a_jpg_mask(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for name in ("a", "b"):
        write_label(tmp_path / "gt" / f"{name}.png", np.zeros((4, 5), np.uint8))
        write_label(tmp_path / "pred" / f"{name}.png", np.zeros((4, 5), np.uint8))
    jpg = _png_to_jpg(tmp_path / "gt" / "b.png")
    with pytest.raises(LabelFormatError, match="ground-truth labels must be PNG") as err:
        evaluate_folders(tmp_path / "pred", tmp_path / "gt", ["bg", "fg"])
    assert str(err.value).startswith(str(jpg))
    args = ["evaluate", "--pred", str(tmp_path / "pred"), "--gt", str(tmp_path / "gt"), "--classes", "2"]
    with pytest.raises(SystemExit) as done:
        main(args)
    err_text = capsys.readouterr().err
    assert done.value.code == 2 and "b.jpg" in err_text and "must be PNG" in err_text, err_text
    assert "Traceback" not in err_text


def test_evaluate_size_mismatch_names_prediction_and_ground_truth(tmp_path: Path) -> None:
    write_label(tmp_path / "gt" / "a.png", np.zeros((4, 5), np.uint8))
    write_label(tmp_path / "pred" / "a.png", np.zeros((4, 6), np.uint8))
    with pytest.raises(LabelFormatError) as err:
        evaluate_folders(tmp_path / "pred", tmp_path / "gt", ["bg", "fg"])
    msg = str(err.value)
    assert msg.startswith(str(tmp_path / "pred" / "a.png")) and str(tmp_path / "gt" / "a.png") in msg
    assert "(4, 6)" in msg and "(4, 5)" in msg
