"""Model presets: `--sam toy --clip toy` alone brings the toy's recommended settings (toy manifest) and
labels a `data synth` world as well as the toy config does; a run whose first labels are degenerate
warns with figures and the settings to look at; `config show` says where each value came from."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from typer.testing import CliRunner

from zsplg_fast.cli.main import app
from zsplg_fast.config import load_config
from zsplg_fast.data.synthetic import generate_dataset
from zsplg_fast.train.evaluate import evaluate_folders

TOY_CI = Path(__file__).parents[2] / "zsplg_fast" / "configs" / "toy_ci.yaml"


def test_presets_follow_the_precedence_and_config_show_names_the_source(tmp_path: Path) -> None:
    recommended = json.loads((TOY_CI.parents[1] / "toy" / "manifest.json").read_text())["recommended"]
    cfg = load_config(None, {"sam.variant": "toy", "clip.model": "toy"})
    assert cfg.clip.gem_depth == recommended["clip"]["gem_depth"] == 0
    assert cfg.clip.image_size == recommended["clip"]["image_size"]
    assert cfg.amg.pred_iou_thresh == recommended["amg"]["pred_iou_thresh"]
    assert cfg.classify.include_background_prompt is True
    # preset ← YAML ← --set: a YAML value and an override both win over the preset
    yaml = tmp_path / "c.yaml"
    yaml.write_text("clip:\n  model: toy\n  image_size: 192\n")
    cfg = load_config(yaml, {"amg.pred_iou_thresh": 0.6})
    assert (cfg.clip.image_size, cfg.clip.gem_depth, cfg.amg.pred_iou_thresh) == (192, 0, 0.6)
    assert load_config(None, {"clip.model": "ViT-B-16"}).clip.image_size == 448
    res = CliRunner().invoke(app, ["config", "show", "--config", str(yaml), "--set", "sam.variant=toy"])
    assert res.exit_code == 0, res.output
    assert f"clip.image_size: config {yaml}" in res.output
    assert "clip.gem_depth: preset clip.model=toy" in res.output
    assert "amg.pred_iou_thresh: preset sam.variant=toy" in res.output
    assert "sam.variant: --set" in res.output


def test_toy_models_alone_label_a_synth_world_and_degenerate_runs_warn(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    data = tmp_path / "world"
    generate_dataset(data, 5, seed=0)  # what `zsplg-fast data synth --num 5` writes
    split = tmp_path / "two.txt"
    split.write_text("".join((data / "splits" / "unlabeled.txt").read_text().splitlines(True)[:2]))
    base = ["label", "--data", f"synthetic:{data}", "--split", str(split), "--classes", "auto"]
    base += ["--sam", "toy", "--clip", "toy", "--set", "label.io_workers=0"]
    res = CliRunner().invoke(app, [*base, "--out", str(tmp_path / "zs")])
    assert res.exit_code == 0, res.output
    gt = tmp_path / "gt"
    gt.mkdir()
    for p in (tmp_path / "zs" / "labels").glob("*.png"):
        (gt / p.name).write_bytes((data / "SegmentationClass" / p.name).read_bytes())
    classes = (data / "classes.txt").read_text().split()
    report = evaluate_folders(tmp_path / "zs" / "labels", gt, classes)
    # without the presets: an error on clip.gem_depth=6; with gem_depth 0 alone, all background (12.6)
    assert report["pixel_accuracy"] > 0.9 and report["miou_present"] > 0.6, report
    # the default AMG thresholds keep no mask of the weak toy SAM: warned after the first label
    strict = ["--set", "amg.pred_iou_thresh=0.88", "--set", "amg.stability_score_thresh=0.95"]
    split.write_text(split.read_text().splitlines(True)[0])
    with caplog.at_level(logging.WARNING, logger="zsplg_fast.labeling"):
        res = CliRunner().invoke(
            app, [*base, *strict, "--set", "label.check_first=1", "--out", str(tmp_path / "bad")]
        )
    assert res.exit_code == 0, res.output
    assert "the first 1 labels look degenerate" in caplog.text and "no masks were kept" in caplog.text
    assert "% of all pixels are class 0" in caplog.text and "clip.gem_depth" in caplog.text
