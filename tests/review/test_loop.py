"""The review loop end to end on the toy world: label → export CVAT → correct masks in the archive →
import → train on the imported labels; the corrected pixels reach the trainer."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from zsplg_fast.config import load_config
from zsplg_fast.data import VOC_PALETTE, open_source, read_label
from zsplg_fast.review.run import import_labels
from zsplg_fast.train.datasets import with_labels
from zsplg_fast.train.supervised import train_supervised


def _correct(archive: Path, fixed: Path, sample_id: str, cls: int) -> tuple[slice, slice]:
    """Repaint a box of one image as class ``cls``, as CVAT writes it (an RGB PNG), and re-zip."""
    box = (slice(20, 60), slice(30, 90))
    with zipfile.ZipFile(archive) as src, zipfile.ZipFile(fixed, "w") as dst:
        for name in src.namelist():
            data = src.read(name)
            if name == f"SegmentationClass/{sample_id}.png":
                with Image.open(io.BytesIO(data)) as im:
                    rgb = np.array(im.convert("RGB"))
                rgb[box] = VOC_PALETTE[cls]
                buf = io.BytesIO()
                Image.fromarray(rgb).save(buf, format="PNG")
                data = buf.getvalue()
            dst.writestr(name, data)
    return box


def test_corrected_cvat_masks_reach_training(toy_world: Path, toy_labels: Path, tmp_path: Path) -> None:
    from zsplg_fast.review.run import export_labels

    torch.set_num_threads(1)
    export_labels(toy_labels, "cvat", tmp_path / "cvat")
    sid = "unlabeled_00001"
    before = read_label(toy_labels / "labels" / f"{sid}.png")
    cross = 6
    box = _correct(tmp_path / "cvat" / "segmentation_mask.zip", tmp_path / "fixed.zip", sid, cross)
    assert (before[box] != cross).any()  # the correction changes pixels
    imported = tmp_path / "imported"
    s = import_labels("cvat", tmp_path / "fixed.zip", str(toy_labels), imported)
    assert s["imported"] == 3
    split = json.loads((toy_labels / "manifest.json").read_text())["split"]  # the images that were labeled
    samples = with_labels(open_source(f"synthetic:{toy_world}", str(split)).samples, imported)
    got = {smp.id: smp.load_label() for smp in samples}
    assert (got[sid][box] == cross).all()
    outside = np.ones(before.shape, bool)
    outside[box] = False
    np.testing.assert_array_equal(got[sid][outside], before[outside])
    np.testing.assert_array_equal(
        got["unlabeled_00000"], read_label(toy_labels / "labels/unlabeled_00000.png")
    )

    over = {
        "data.source": f"synthetic:{toy_world}",
        "data.unlabeled": str(split),
        "data.enhanced": str(imported),
        "data.crop_size": 64,
        "data.workers": 0,
        "data.preflight_cache": str(tmp_path / "preflight"),
        "model.backbone": "tiny",
        "optim.lr_scaling": "none",
        "supervised.batch_size": 4,
        "supervised.max_iters": 2,
        "supervised.use_enhanced": True,
        "eval.every_epochs": 0,
        "run.device": "cpu",
    }
    again = export_labels(imported, "coco", tmp_path / "again")  # a second review round: labels only
    assert again["images"] == 3 and again["missing_fields"] == ["margin", "rle", "uncovered_fraction"]
    import_labels("coco", tmp_path / "again" / "instances.json", str(imported), tmp_path / "round2")
    assert (read_label(tmp_path / "round2" / "labels" / f"{sid}.png")[box] == cross).all()

    cfg = load_config(None, {f"train.{k}": v for k, v in over.items()}).train
    summary = train_supervised(cfg, tmp_path / "train")
    assert summary["enhanced"] == str(imported)
    labeled = len(open_source(f"synthetic:{toy_world}", "labeled").samples)
    assert summary["images"] == labeled + 3
    assert Path(summary["checkpoint"]).is_file()
