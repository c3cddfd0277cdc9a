"""A SAM 2 proposer through the ``run`` pipeline and the review loop, as a user drives them from the CLI:
``zsplg-fast run`` (zero-shot stage) with ``sam.variant: sam2_tiny`` and its official .pt labels the
unlabeled split, scores it, records the proposer, is reused on a rerun and redone when the checkpoint
file changes under the same path; its label folder exports to every review format, the importable ones
come back pixel for pixel, and the report page is written."""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

pytest.importorskip("sam2", reason="the [sam2] extra is not installed")

from zsplg_fast.cli.main import app
from zsplg_fast.data import read_label
from zsplg_fast.utils.io import sha256_file

CONFIG = Path(__file__).parents[2] / "zsplg_fast" / "configs" / "toy_ci.yaml"
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::FutureWarning")


def _invoke(*args: str) -> str:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = CliRunner().invoke(app, list(args))
    assert res.exit_code == 0, res.output
    return res.output


def _run(world: Path, out: Path, ckpt: Path) -> str:
    sets = {
        "pipeline.stages": "[zero_shot]",
        "pipeline.overlays": 0,
        "sam.variant": "sam2_tiny",
        "sam.checkpoint": str(ckpt),
        "amg.points_per_side": 4,
        "amg.pred_iou_thresh": 0,
        "amg.stability_score_thresh": 0,
        "label.device": "cpu",
    }
    flags = [x for k, v in sets.items() for x in ("--set", f"{k}={v}")]
    return _invoke("run", str(CONFIG), "--data", f"synthetic:{world}", "--out", str(out), *flags)


@pytest.fixture(scope="module")
def sam2_run(toy_world: Path, sam2_tiny_ckpt: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("sam2run")
    ckpt = Path(shutil.copy(sam2_tiny_ckpt, root / "sam2_tiny.pt"))  # this test replaces it later
    out = root / "run"
    first = _run(toy_world, out, ckpt)
    (stage,) = sorted(out.glob("00-zero_shot-*"))
    return {"root": root, "ckpt": ckpt, "out": out, "stage": stage, "first": first, "world": toy_world}


def test_run_pipeline_zero_shot_stage_with_sam2(sam2_run: dict) -> None:
    stage, ckpt = sam2_run["stage"], sam2_run["ckpt"]
    assert "zero_shot: done" in sam2_run["first"]
    unlabeled = (sam2_run["world"] / "splits" / "unlabeled.txt").read_text().splitlines()
    assert len(list((stage / "labels").glob("*.png"))) == len(unlabeled) == 3
    manifest = json.loads((stage / "manifest.json").read_text())
    assert manifest["proposer"] == {
        "family": "sam2",
        "variant": "sam2_tiny",
        "checkpoint": str(ckpt),
        "sha256": sha256_file(ckpt),
    }
    result = json.loads((stage / "stage.json").read_text())["result"]
    assert result["summary"]["labeled"] == 3 and result["report"]["images_with_gt"] == 3
    assert 0.0 <= result["miou"] <= 1.0

    again = _run(sam2_run["world"], sam2_run["out"], ckpt)  # same config, same weights: reused
    assert "zero_shot: reused" in again

    # the same path, other weights: a new zero-shot stage (its own folder), never the old labels
    import torch

    raw = torch.load(ckpt, weights_only=True)  # the official {"model": state_dict} layout
    key = "sam_mask_decoder.iou_prediction_head.layers.0.weight"
    raw["model"][key] = raw["model"][key] + 0.01
    torch.save(raw, ckpt.with_suffix(".new.pt"))
    ckpt.with_suffix(".new.pt").replace(ckpt)
    redone = _run(sam2_run["world"], sam2_run["out"], ckpt)
    assert "zero_shot: done" in redone
    stages = sorted(sam2_run["out"].glob("00-zero_shot-*"))
    assert len(stages) == 2 and stage in stages  # the first stage's folder is kept as it was
    (new,) = [s for s in stages if s != stage]
    assert json.loads((new / "manifest.json").read_text())["proposer"]["sha256"] == sha256_file(ckpt)


def _labels(folder: Path) -> dict[str, np.ndarray]:
    return {p.stem: read_label(p) for p in sorted((folder / "labels").glob("*.png"))}


# format → the file the importer reads back (None: export only)
FORMATS = {
    "cvat": "segmentation_mask.zip",
    "labelstudio": "tasks.json",
    "coco": "instances.json",
    "yolo-seg": None,
    "fiftyone": None,
}


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_sam2_label_folder_exports_and_imports_back(sam2_run: dict, tmp_path: Path, fmt: str) -> None:
    labels = sam2_run["stage"]
    out = tmp_path / fmt
    said = _invoke("labels", "export", str(labels), "--format", fmt, "--out", str(out))
    assert "3 of 3 images" in said
    back_from = FORMATS[fmt]
    if back_from is None:
        assert any(out.rglob("*")), fmt
        return
    back = tmp_path / f"back-{fmt}"
    _invoke(
        "labels",
        "import",
        str(out / back_from),
        "--format",
        fmt,
        "--classes",
        str(labels),
        "--out",
        str(back),
    )
    want, got = _labels(labels), _labels(back)
    assert want.keys() == got.keys() and len(want) == 3
    for k in want:
        np.testing.assert_array_equal(got[k], want[k], err_msg=f"{fmt} {k}")


def test_sam2_label_folder_report_page(sam2_run: dict, tmp_path: Path) -> None:
    _invoke("labels", "report", str(sam2_run["stage"]), "--out", str(tmp_path / "report"))
    html = (tmp_path / "report" / "index.html").read_text()
    assert html.count("<img") >= 3
