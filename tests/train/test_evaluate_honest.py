"""Issue 21.2-3: evaluation never reports a number computed over nothing. No prediction at all is exit 2
(with --missing skip too); skipped files are counted on the console as in the JSON; 0 valid pixels
(every ground-truth pixel 255) warns on the console and in the JSON."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from zsplg_fast.cli.main import main
from zsplg_fast.data.labels import write_label
from zsplg_fast.errors import DatasetError
from zsplg_fast.train.evaluate import evaluate_folders
from zsplg_fast.train.metrics import NO_VALID_PIXELS

GT = np.array([[0, 1], [1, 255]], np.uint8)


def _cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as done:
        main(argv)
    out = capsys.readouterr()
    return int(done.value.code or 0), " ".join(out.out.split()), " ".join(out.err.split())


def test_no_prediction_at_all_is_exit_2_even_with_missing_skip(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in ("a", "b"):
        write_label(tmp_path / "gt" / f"{name}.png", GT)
    (tmp_path / "pred").mkdir()
    write_label(tmp_path / "pred" / "other.png", GT)  # a prediction, but for no ground-truth file
    with pytest.raises(DatasetError, match="no prediction for any of the 2 ground-truth files"):
        evaluate_folders(tmp_path / "pred", tmp_path / "gt", ["bg", "one"], missing="skip")
    argv = ["evaluate", "--pred", str(tmp_path / "pred"), "--gt", str(tmp_path / "gt"), "--classes", "2"]
    code, out, err = _cli([*argv, "--missing", "skip", "--json", str(tmp_path / "r.json")], capsys)
    assert code == 2 and "DatasetError" in err and str(tmp_path / "pred") in err, err
    assert "mIoU" not in out and not (tmp_path / "r.json").exists()


def test_skipped_files_are_counted_on_the_console_as_in_the_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in ("a", "b", "c"):
        write_label(tmp_path / "gt" / f"{name}.png", GT)
    write_label(tmp_path / "pred" / "a.png", GT)
    argv = ["evaluate", "--pred", str(tmp_path / "pred"), "--gt", str(tmp_path / "gt"), "--classes", "2"]
    code, out, _ = _cli([*argv, "--missing", "skip", "--json", str(tmp_path / "r.json")], capsys)
    report = json.loads((tmp_path / "r.json").read_text())
    assert code == 0 and report["missing"] == 2 and report["images"] == 1
    assert "skipped 2 of 3 ground-truth files without a prediction" in out
    assert report["warnings"] == [] and report["valid_pixels"] == 3


def test_zero_valid_pixels_warns_on_the_console_and_in_the_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ignore = np.full((4, 4), 255, np.uint8)
    write_label(tmp_path / "gt" / "a.png", ignore)
    write_label(tmp_path / "pred" / "a.png", np.zeros((4, 4), np.uint8))
    argv = ["evaluate", "--pred", str(tmp_path / "pred"), "--gt", str(tmp_path / "gt"), "--classes", "2"]
    code, out, _ = _cli([*argv, "--json", str(tmp_path / "r.json")], capsys)
    report = json.loads((tmp_path / "r.json").read_text())
    assert code == 0 and report["valid_pixels"] == 0 and report["warnings"] == [NO_VALID_PIXELS]
    assert "warning: 0 valid pixels: every ground-truth pixel is ignore (255)" in out
