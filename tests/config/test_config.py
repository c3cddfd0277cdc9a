"""The config: every kind of bad value is refused with the key, the value and the valid values; YAML,
``--set`` and CLI options override in that order; ``config show`` prints the effective config."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from zsplg_fast.cli.common import build_config
from zsplg_fast.cli.main import app
from zsplg_fast.config import load_config
from zsplg_fast.errors import ConfigError


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        (
            {"amg.points_per_sid": 16},
            r"'amg.points_per_sid' = 16: unknown key.*did you mean 'amg.points_per_side'",
        ),
        ({"clasify.classes": "voc"}, r"did you mean 'classify'"),
        ({"amg.points_per_side": "x"}, r"'amg.points_per_side' = 'x': wrong type str; valid: an integer"),
        ({"train.unimatch.conf_thresh": 1.5}, r"conf_thresh' = 1.5: out of range; valid: \[0.0, 1.0\]"),
        ({"label.backend": "tensorflow"}, r"'tensorflow': not an allowed value; valid: torch, ort, trt"),
        ({"pipeline.stages": ["zero_shot", "fnal"]}, r"pipeline.stages\[1\].*valid: zero_shot, unimatch"),
        (
            {"train.enhance.scope": "background", "train.enhance.fallback": "ignore"},
            r"'train.enhance.scope' = 'background': .*needs fallback zero_shot \(got ignore\)",
        ),
    ],
)
def test_bad_values_name_key_value_and_valid_values(override: dict, expected: str) -> None:
    with pytest.raises(ConfigError, match=expected):
        load_config(None, override)


def test_yaml_then_set_then_options(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"amg": {"points_per_side": 8, "pred_iou_thresh": 0.5}}))
    assert load_config(path).amg.points_per_side == 8
    cfg = build_config(
        path, ["amg.points_per_side=12", "amg.box_nms_thresh=0.6"], {"amg.points_per_side": 20}
    )
    assert (cfg.amg.points_per_side, cfg.amg.pred_iou_thresh, cfg.amg.box_nms_thresh) == (20, 0.5, 0.6)
    cfg = build_config(path, ["amg.points_per_side=12"], {"amg.points_per_side": None})
    assert cfg.amg.points_per_side == 12


def test_bad_yaml_key_names_the_file_key(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("amg:\n  pred_iou_tresh: 0.5\n")
    with pytest.raises(ConfigError, match=r"did you mean 'amg\.pred_iou_thresh'"):
        load_config(path)


def test_config_show_prints_the_effective_config(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("amg:\n  points_per_side: 8\n")
    res = CliRunner().invoke(app, ["config", "show", "--config", str(path), "--set", "label.backend=ort"])
    assert res.exit_code == 0, res.output
    shown = yaml.safe_load(res.output)
    assert shown["amg"]["points_per_side"] == 8 and shown["label"]["backend"] == "ort"
    assert shown["clip"]["model"] == "ViT-B-16"
    cli = [sys.executable, "-c", "from zsplg_fast.cli.main import main; main()"]
    bad = subprocess.run(
        [*cli, "config", "show", "--set", "amg.points_per_sid=3"], capture_output=True, text=True
    )
    assert bad.returncode != 0 and "did you mean 'amg.points_per_side'" in bad.stderr
    assert "Traceback" not in bad.stderr
