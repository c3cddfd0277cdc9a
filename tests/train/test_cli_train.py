"""The CLI chain on a tiny run: unimatch → enhance → train → evaluate --checkpoint."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from zsplg_fast.cli.main import app


def test_cli_chain(synth: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from zsplg_fast.cli import common

    # the summary table folds a long path at 80 columns: the run folder's path length (xdist's
    # popen-gwN/ adds 10 characters) must not split "final.pth"
    monkeypatch.setattr(common.console, "width", 200)
    common = ["--data", f"synthetic:{synth}", "--backbone", "tiny"]
    sets = [
        "train.data.crop_size=64",
        "train.data.workers=0",
        f"train.data.preflight_cache={tmp_path / 'pf'}",
        "train.unimatch.batch_size=2",
        "train.unimatch.max_iters=2",
        "train.supervised.batch_size=2",
        "train.supervised.max_iters=2",
        "train.eval.every_epochs=0",
        "train.run.device=cpu",
    ]
    s = [a for kv in sets for a in ("--set", kv)]
    runner = CliRunner()
    zs = str(synth / "SegmentationClass")
    res = runner.invoke(app, ["unimatch", *common, "--zero-shot", zs, "--out", str(tmp_path / "u"), *s])
    assert res.exit_code == 0, res.output
    assert "final.pth" in res.output
    ckpt = tmp_path / "u" / "final.pth"
    enh = ["enhance", "--checkpoint", str(ckpt), "--data", f"synthetic:{synth}", "--zero-shot", zs]
    res = runner.invoke(app, [*enh, "--out", str(tmp_path / "e"), *s])
    assert res.exit_code == 0, res.output
    assert json.loads((tmp_path / "e" / "report.json").read_text())["written"] == 24
    final = ["train", *common, "--enhanced", str(tmp_path / "e"), "--out", str(tmp_path / "f"), *s]
    res = runner.invoke(app, final)
    assert res.exit_code == 0, res.output
    metrics = json.loads((tmp_path / "f" / "metrics.json").read_text())
    assert metrics["complete"] and 0.0 <= metrics["miou"] <= 1.0
    res = runner.invoke(app, final)  # the run exists and --resume was not given
    assert res.exit_code != 0 and "--resume" in str(res.exception)
    res = runner.invoke(app, [*final, "--resume"])
    assert res.exit_code == 0, res.output
    res = runner.invoke(
        app,
        ["evaluate", "--checkpoint", str(tmp_path / "f" / "final.pth"), "--data", f"synthetic:{synth}", *s],
    )
    assert res.exit_code == 0 and "mIoU" in res.output, res.output
