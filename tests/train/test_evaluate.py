"""Evaluation: folder vs folder against a hand-computed confusion matrix; checkpoint mode and its modes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from zsplg_fast.cli.main import app
from zsplg_fast.data.labels import write_label
from zsplg_fast.data.sources import open_source
from zsplg_fast.errors import DatasetError
from zsplg_fast.models.segmenter import build_segmenter, save_checkpoint
from zsplg_fast.train.evaluate import evaluate_folders, predict

GT_A = np.array([[0, 0, 1], [1, 2, 255]], np.uint8)
PR_A = np.array([[0, 1, 1], [1, 0, 2]], np.uint8)
GT_B = np.array([[2, 2], [0, 255]], np.uint8)
PR_B = np.array([[2, 255], [0, 1]], np.uint8)


@pytest.fixture
def folders(tmp_path: Path) -> tuple[Path, Path]:
    for name, gt, pr in (("a", GT_A, PR_A), ("sub/b", GT_B, PR_B)):
        write_label(tmp_path / "gt" / f"{name}.png", gt)
        write_label(tmp_path / "pred" / f"{name}.png", pr)
    return tmp_path / "pred", tmp_path / "gt"


def test_folders_match_hand_computed_confusion(folders: tuple[Path, Path], tmp_path: Path) -> None:
    pred, gt = folders
    report = evaluate_folders(pred, gt, ["bg", "one", "two"], out=tmp_path / "r.json")
    # pixels (gt → pred), 255 gt skipped:
    # a: 0→0, 0→1, 1→1, 1→1, 2→0;  b: 2→2, 2→255 (a miss for class 2), 0→0
    # class 0: I = 2 (a, b), gt = 3, pred = 3 (incl. a's 2→0) → U = 4 → 0.5
    # class 1: I = 2, gt = 2, pred = 3 → U = 3 → 2/3
    # class 2: I = 1, gt = 3 (incl. the 255 prediction), pred = 1 → U = 3 → 1/3
    ious = [c["iou"] for c in report["per_class"]]
    assert ious == pytest.approx([0.5, 2 / 3, 1 / 3])
    assert report["miou"] == pytest.approx((0.5 + 2 / 3 + 1 / 3) / 3)
    assert report["images"] == 2 and json.loads((tmp_path / "r.json").read_text())["miou"] == report["miou"]


def test_folders_missing_prediction(folders: tuple[Path, Path]) -> None:
    pred, gt = folders
    (pred / "sub" / "b.png").unlink()
    with pytest.raises(DatasetError, match="no prediction for 1 of 2"):
        evaluate_folders(pred, gt, ["bg", "one", "two"])
    assert evaluate_folders(pred, gt, ["bg", "one", "two"], missing="skip")["missing"] == 1


def test_cli_evaluate_folder_mode(folders: tuple[Path, Path], tmp_path: Path) -> None:
    pred, gt = folders
    res = CliRunner().invoke(
        app,
        [
            "evaluate",
            "--pred",
            str(pred),
            "--gt",
            str(gt),
            "--classes",
            "3",
            "--json",
            str(tmp_path / "o.json"),
        ],
    )
    assert res.exit_code == 0, res.output
    assert "mIoU" in res.output and "50.00" in res.output
    assert json.loads((tmp_path / "o.json").read_text())["miou"] == pytest.approx(0.5)


def test_sliding_window_covering_the_image_equals_original() -> None:
    torch.manual_seed(0)
    model = build_segmenter("tiny", 3).eval()
    img = torch.randn(1, 3, 40, 56)
    full = predict(model, img, "original")
    # stride int(2/3 · 90) = 60 ≥ both sides: one window, the whole image (upstream's loop)
    assert torch.allclose(predict(model, img, "sliding_window", window=90), full, atol=1e-6)
    tiled = predict(model, img, "sliding_window", window=24)
    assert tiled.shape == full.shape and torch.allclose(tiled.sum(1), torch.ones(1, 40, 56), atol=1e-5)


def test_cli_evaluate_checkpoint(synth: Path, tmp_path: Path) -> None:
    torch.manual_seed(0)
    names = ["background", "circle", "square", "triangle"]
    save_checkpoint(tmp_path / "m.pth", build_segmenter("tiny", 4), names)
    samples = open_source(f"synthetic:{synth}", "val").samples
    args = ["evaluate", "--checkpoint", str(tmp_path / "m.pth"), "--data", f"synthetic:{synth}"]
    res = CliRunner().invoke(
        app, [*args, "--json", str(tmp_path / "e.json"), "--set", "train.run.device=cpu"]
    )
    assert res.exit_code == 0, res.output
    report = json.loads((tmp_path / "e.json").read_text())
    assert report["images"] == len(samples) and [c["name"] for c in report["per_class"]] == names
    res = CliRunner().invoke(app, [*args, "--mode", "sliding_window", "--window", "48"])
    assert res.exit_code == 0 and "sliding_window" in res.output, res.output


@pytest.mark.parametrize("value", [37, 200])
def test_out_of_range_predictions_are_refused_or_counted_naming_the_files(
    folders: tuple[Path, Path], tmp_path: Path, value: int
) -> None:
    from zsplg_fast.errors import LabelFormatError

    pred, gt = folders
    stray = GT_B.copy()
    stray[0, 0] = value  # one stray pixel: before, a near-perfect mIoU and exit 0
    write_label(pred / "sub" / "b.png", stray)
    with pytest.raises(LabelFormatError, match=rf"outside 0..2 and 255.*1 of 2 files.*\[{value}\]") as err:
        evaluate_folders(pred, gt, ["bg", "one", "two"])
    assert str(err.value).startswith(str(pred / "sub" / "b.png"))
    report = evaluate_folders(pred, gt, ["bg", "one", "two"], out_of_range="count")
    assert report["out_of_range"] == {"files": {str(pred / "sub" / "b.png"): [value]}, "pixels": 1}
    res = CliRunner().invoke(
        app, ["evaluate", "--pred", str(pred), "--gt", str(gt), "--classes", "3", "--out-of-range", "count"]
    )
    assert res.exit_code == 0 and "b.png" in res.output and "outside the 3 classes" in res.output, res.output
