"""`zsplg-fast label` with a SAM 2 proposer (sam2_tiny weights in the official .pt layout): torch and
onnxruntime backends, the upstream SAM2AutomaticMaskGenerator source, resume, and the manifest's record of
the proposer family and checkpoint hash."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

pytest.importorskip(
    "sam2",
    reason="the [sam2] extra is not installed (SAM2_BUILD_CUDA=0 pip install --no-build-isolation sam2)",
)

from zsplg_fast.cli.main import app
from zsplg_fast.data.synthetic import make_toy_world

CONFIG = Path(__file__).parents[2] / "zsplg_fast" / "configs" / "toy_ci.yaml"
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::FutureWarning")


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory, sam2_tiny_ckpt: Path) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("sam2label")
    data = root / "world"
    make_toy_world(data, "ci")
    split = root / "one.txt"
    split.write_text("".join((data / "splits" / "unlabeled.txt").read_text().splitlines(True)[:1]))
    return {"root": root, "data": data, "split": split, "ckpt": sam2_tiny_ckpt}


def _args(s: dict[str, Path], out: Path, *extra: str) -> list[str]:
    args = ["label", "--data", f"synthetic:{s['data']}", "--split", str(s["split"]), "--classes", "auto"]
    args += ["--sam", "sam2_tiny", "--sam-checkpoint", str(s["ckpt"]), "--clip", "toy", "--out", str(out)]
    args += ["--config", str(CONFIG), "--set", "amg.points_per_side=4", "--set", "amg.pred_iou_thresh=0"]
    args += ["--set", "amg.stability_score_thresh=0", "--device", "cpu"]
    return [*args, *extra]


def _labels(out: Path) -> dict[str, np.ndarray]:
    return {p.name: np.array(Image.open(p)) for p in sorted((out / "labels").glob("*.png"))}


def test_label_with_sam2_on_torch_ort_and_upstream(setup: dict[str, Path], sam2_toy_engines: Path) -> None:
    s, run = setup, CliRunner()
    torch_out = s["root"] / "torch"
    res = run.invoke(app, _args(s, torch_out))
    assert res.exit_code == 0, res.output
    manifest = json.loads((torch_out / "manifest.json").read_text())
    sha = hashlib.sha256(s["ckpt"].read_bytes()).hexdigest()
    assert manifest["proposer"] == {
        "family": "sam2",
        "variant": "sam2_tiny",
        "checkpoint": str(s["ckpt"]),
        "sha256": sha,
    }
    assert (
        manifest["engines"]["decoder"] == "sam2_decoder_batched" and manifest["engines"]["proposer"] == "sam2"
    )
    labels = _labels(torch_out)
    assert len(labels) == 1
    metas = [json.loads(p.read_text()) for p in sorted((torch_out / "meta").glob("*.json"))]
    assert all(m["num_masks"] >= 1 for m in metas), metas[0]
    # resume: a rerun relabels nothing
    mtimes = [p.stat().st_mtime_ns for p in sorted((torch_out / "labels").glob("*.png"))]
    again = run.invoke(app, _args(s, torch_out))
    assert again.exit_code == 0, again.output
    assert [p.stat().st_mtime_ns for p in sorted((torch_out / "labels").glob("*.png"))] == mtimes

    # onnxruntime: the SAM 2 artifacts and the toy CLIP exported through the CLI (conftest), label from them
    engines = sam2_toy_engines
    assert {p.name for p in engines.glob("sam2_*.onnx")} == {"sam2_encoder.onnx", "sam2_decoder_batched.onnx"}
    ort_out = s["root"] / "ort"
    res = run.invoke(app, _args(s, ort_out, "--backend", "ort", "--engines", str(engines)))
    assert res.exit_code == 0, res.output
    ort = _labels(ort_out)
    agree = np.mean([np.mean(ort[k] == v) for k, v in labels.items()])
    assert agree >= 0.99, agree  # same masks up to onnxruntime's last-bit differences

    # the reference: sam2's SAM2AutomaticMaskGenerator + eager dense CLIP
    up_out = s["root"] / "upstream"
    res = run.invoke(app, _args(s, up_out, "--masks", "upstream"))
    assert res.exit_code == 0, res.output
    up = _labels(up_out)
    assert json.loads((up_out / "manifest.json").read_text())["engines"]["proposer"] == "sam2"
    assert np.mean([np.mean(up[k] == v) for k, v in labels.items()]) >= 0.99


def _meta_masks(out: Path) -> list[list[tuple]]:
    """Per image: (RLE counts, area, box, predicted IoU, stability) of every mask in the meta."""
    return [
        [
            (str(m["rle"]["counts"]), m["area"], m["bbox_xywh"], m["predicted_iou"], m["stability"])
            for m in json.loads(p.read_text())["masks"]
        ]
        for p in sorted((out / "meta").glob("*.json"))
    ]


@pytest.mark.parametrize("m2m", [False, True])
def test_label_fp32_is_sam2_automatic_mask_generator_exactly(setup: dict[str, Path], m2m: bool) -> None:
    """Issue 22 item 5: the speed levers keep fp32 exactness. ``label`` as a user runs it on a CPU
    (precision / compile auto → fp32 eager: no shared-image decoder, no compile; the fused filter before
    upscaling, IoU-first) gives every mask SAM2AutomaticMaskGenerator gives, bit for bit: NMS off so
    random weights keep all 48 candidates (16 points × 3), masks, boxes, areas, IoU and stability equal."""
    s, run = setup, CliRunner()
    extra = ["--set", "amg.box_nms_thresh=1.0", "--set", f"amg.use_m2m={str(m2m).lower()}"]
    outs = {}
    for masks in ("fast", "upstream"):
        outs[masks] = s["root"] / f"exact-{masks}-{m2m}"
        res = run.invoke(app, _args(s, outs[masks], "--masks", masks, *extra))
        assert res.exit_code == 0, res.output
    fast = json.loads((outs["fast"] / "manifest.json").read_text())
    assert fast["run_mode"]["precision"] == "fp32" and fast["run_mode"]["compile"] is False
    assert fast["engines"]["autocast"] == "fp32"
    ours, ref = _meta_masks(outs["fast"]), _meta_masks(outs["upstream"])
    assert [len(m) for m in ref] == [48]
    assert ours == ref
