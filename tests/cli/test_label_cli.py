"""`zsplg-fast label` end to end with the shipped toy SAM and CLIP: labels that match the ground truth,
the manifest, the overlay grid, and a rerun that resumes instead of relabelling."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from zsplg_fast.cli.main import app
from zsplg_fast.data.synthetic import make_toy_world
from zsplg_fast.train.evaluate import evaluate_folders


def test_label_cli_on_the_toy_world(tmp_path: Path) -> None:
    data = tmp_path / "world"
    make_toy_world(data, "ci")
    split = tmp_path / "four.txt"
    split.write_text("".join((data / "splits" / "unlabeled.txt").read_text().splitlines(True)[:4]))
    out = tmp_path / "zs"
    args = ["label", "--data", f"synthetic:{data}", "--split", str(split), "--classes", "auto"]
    args += ["--sam", "toy", "--clip", "toy", "--out", str(out), "--overlays", "2"]
    args += ["--config", str(Path(__file__).parents[2] / "zsplg_fast" / "configs" / "toy_ci.yaml")]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    labels = sorted((out / "labels").glob("*.png"))
    assert len(labels) == 4 and (out / "overlays.png").is_file()
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["classes"] == (data / "classes.txt").read_text().split()
    gt = tmp_path / "gt"
    gt.mkdir()
    for p in labels:
        (gt / p.name).write_bytes((data / "SegmentationClass" / p.name).read_bytes())
    report = evaluate_folders(out / "labels", gt, manifest["classes"])
    assert report["pixel_accuracy"] > 0.9 and report["miou"] > 0.5, report
    mtimes = [p.stat().st_mtime_ns for p in labels]
    again = CliRunner().invoke(app, args)
    assert again.exit_code == 0, again.output
    assert [p.stat().st_mtime_ns for p in labels] == mtimes


def test_auto_classes_never_overwrite_a_foreign_class_file(tmp_path: Path) -> None:
    from dataclasses import replace

    import pytest

    from zsplg_fast.config import load_config
    from zsplg_fast.errors import OutputExistsError
    from zsplg_fast.labeling.run import resolve_auto_classes, write_auto_classes

    cfg = load_config(None, {"classify.classes": "auto", "label.out": str(tmp_path / "out")})
    got = resolve_auto_classes(cfg, ["background", "cat|kitty"])
    assert got.classify.classes == str(tmp_path / "out" / "classes.txt")
    assert not (tmp_path / "out").exists()  # resolving writes nothing; the job writes it once it runs
    write_auto_classes(got, ["background", "cat|kitty"])
    assert (tmp_path / "out" / "classes.txt").read_text() == "background\ncat|kitty\n"
    assert resolve_auto_classes(cfg, ["background", "cat|kitty"]) == got  # same list: reused
    with pytest.raises(OutputExistsError, match="another class list"):
        resolve_auto_classes(cfg, ["background", "dog"])
    assert (tmp_path / "out" / "classes.txt").read_text() == "background\ncat|kitty\n"
    assert (
        resolve_auto_classes(
            replace(cfg, classify=replace(cfg.classify, classes="voc")), None
        ).classify.classes
        == "voc"
    )
