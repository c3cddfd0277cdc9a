"""The shortened demo (``zsplg-fast demo --scale ci``): the paper's ordering in miniature: good
zero-shot labels, enhanced labels at least as good, a final model above the labeled-only baseline.

Shipped toy SAM + CLIP label the toy world's unlabeled split; UniMatch, enhance, the final model and
the labeled-only baseline train on 2 CPU cores. The floors (zero-shot, final over baseline) are what
the shipped models reach on this world (the README's demo table) less a margin for cross-machine float
noise; enhanced >= zero-shot has none. The rerun must reuse every stage.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from zsplg_fast.cli.main import app

ZERO_SHOT_MIN = 0.7  # measured 0.800 on the CI world's 40 unlabeled images
# Enhanced >= zero-shot, with enhance actually changing pixels (so the two are not merely equal).
# Measured 0.8014 vs 0.7999 (demo scale 0.7615 vs 0.7566): the toy segmenter (UniMatch val ~0.3-0.4)
# is weaker than the toy labeler at naming masks, so the toy configs let it only add objects the
# labeler left as background (enhance.scope: background, tau 0.5; 0.22 % of pixels change at demo
# scale). Letting it relabel everywhere breaks more than it fixes at every tau from 0.5 to 0.99.
MIN_CHANGED = 1e-4  # measured 0.00066 on the CI world (0.0022 at demo scale)
FINAL_OVER_BASELINE = 0.05  # measured 0.343 vs 0.216 val mIoU


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict, str]:
    out = tmp_path_factory.mktemp("demo")
    res = CliRunner().invoke(app, ["demo", "--out", str(out), "--scale", "ci"])
    assert res.exit_code == 0, res.output
    return out, json.loads((out / "run" / "summary.json").read_text()), res.output


def test_demo_quality_floors_and_final_over_baseline(demo_run: tuple[Path, dict, str]) -> None:
    _, summary, output = demo_run
    t = summary["table"]
    assert t["zero_shot_label_miou"] >= ZERO_SHOT_MIN, t
    assert t["enhanced_label_miou"] >= t["zero_shot_label_miou"], t
    enhance = next(s["result"] for s in summary["stages"] if s["name"] == "enhance")
    assert enhance["changed_fraction"] >= MIN_CHANGED, enhance
    assert t["final_val_miou"] >= t["baseline_val_miou"] + FINAL_OVER_BASELINE, t
    for label in ("zero-shot labels", "enhanced labels", "final model", "labeled-only baseline"):
        assert label in output


def test_demo_writes_stage_folders_and_overlays_and_resumes(demo_run: tuple[Path, dict, str]) -> None:
    out, summary, _ = demo_run
    stages = [s["name"] for s in summary["stages"]]
    assert stages == ["zero_shot", "unimatch", "enhance", "final", "baseline", "evaluate"]
    for s in summary["stages"]:
        folder = Path(s["folder"])
        assert folder.parent == out / "run" and folder.name.startswith(f"0{stages.index(s['name'])}-")
        assert json.loads((folder / "stage.json").read_text())["complete"] is True
    assert (Path(summary["stages"][0]["folder"]) / "overlays.png").stat().st_size > 10_000
    assert (Path(summary["stages"][-1]["folder"]) / "overlays.png").stat().st_size > 10_000
    again = CliRunner().invoke(app, ["demo", "--out", str(out), "--scale", "ci"])
    assert again.exit_code == 0, again.output
    rerun = json.loads((out / "run" / "summary.json").read_text())
    assert all(s["reused"] for s in rerun["stages"]) and rerun["table"] == summary["table"]
