"""The labeler built from a config: upstream reference, fast AMG on torch, fast AMG on ONNX artifacts."""

import json
import shutil

import pytest

from zsplg_fast.config import load_config
from zsplg_fast.data import read_label
from zsplg_fast.data.synthetic import generate_dataset
from zsplg_fast.errors import CheckpointError, ConfigError
from zsplg_fast.labeling.run import label_dataset


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("world")
    generate_dataset(root, num=4, num_classes=3, seed=5, size=96)
    return root


def _cfg(world, out, tiny_clip_name, **extra):
    overrides = {
        "data.source": f"synthetic:{world}",
        "classify.classes": str(world / "classes.txt"),
        "sam.variant": "tiny",
        "clip.model": tiny_clip_name,
        "clip.image_size": 96,
        "clip.gem_depth": 1,
        "amg.points_per_side": 6,
        "amg.pred_iou_thresh": 0.0,
        "amg.stability_score_thresh": 0.0,
        "label.out": str(out),
        "label.io_workers": 0,
        **extra,
    }
    return load_config(overrides=overrides)


def _labels(out):
    return {p.stem: read_label(p) for p in sorted((out / "labels").glob("*.png"))}


@pytest.fixture(scope="module")
def artifacts(world, tmp_path_factory, tiny_clip_name):
    """Tiny-model artifacts: sam_encoder + sam_decoder_batched (legacy exporter), clip_dense (dynamo)."""
    from zsplg_fast.export.pipeline import run_export

    art = tmp_path_factory.mktemp("export")
    overrides = ["sam_encoder=legacy", "sam_decoder_batched=legacy"]
    ecfg = _cfg(
        world,
        art / "unused",
        tiny_clip_name,
        **{"export.out_dir": str(art), "export.exporter_overrides": overrides},
    )
    run_export("sam", ecfg, only=["sam_encoder", "sam_decoder_batched"])
    run_export("clip", ecfg, only=["clip_dense"])
    return art


def test_fast_torch_and_ort_labels_equal_upstream(world, tmp_path, tiny_clip_name, artifacts):
    runs = {
        "upstream": {"label.masks": "upstream"},
        "fast_torch": {"label.masks": "fast", "label.backend": "torch"},
        "fast_ort": {"label.masks": "fast", "label.backend": "ort", "label.engines": str(artifacts)},
    }
    labels = {}
    for name, extra in runs.items():
        out = tmp_path / name
        summary = label_dataset(_cfg(world, out, tiny_clip_name, **extra))
        assert (summary.labeled, summary.failed) == (4, 0)
        labels[name] = _labels(out)
        manifest = json.loads((out / "manifest.json").read_text())
        assert manifest["engines"]["masks"] == extra["label.masks"]
        # precision / compile auto: exact fp32 and eager on a CPU, and the manifest says so
        assert manifest["run_mode"]["precision"] == manifest["config"]["label"]["precision"] == "fp32"
        assert manifest["run_mode"]["compile"] is False
    assert labels["upstream"].keys() == labels["fast_ort"].keys() and len(labels["upstream"]) == 4
    # masks were found and named (index 0 is never predicted), so equality below is not all-background
    assert sum(int((lab != 0).sum()) for lab in labels["upstream"].values()) > 0
    for k, ref in labels["upstream"].items():
        # identical masks and classes → identical label maps (random weights, deterministic init)
        assert (labels["fast_torch"][k] == ref).mean() > 0.99
        assert (labels["fast_ort"][k] == labels["fast_torch"][k]).mean() > 0.99
    # the fingerprint ignores the backend: one folder can be resumed with another backend
    fps = {
        json.loads((tmp_path / n / "manifest.json").read_text())["fingerprint"]
        for n in ("fast_torch", "fast_ort")
    }
    assert len(fps) == 1


def test_ort_backend_refuses_missing_or_foreign_artifacts(world, tmp_path, tiny_clip_name, artifacts):
    with pytest.raises(ConfigError, match=r"sam_encoder\.onnx not found"):
        label_dataset(
            _cfg(
                world,
                tmp_path / "o",
                tiny_clip_name,
                **{"label.backend": "ort", "label.engines": str(tmp_path)},
            )
        )
    foreign = tmp_path / "foreign"
    shutil.copytree(artifacts, foreign)
    side = foreign / "sam_encoder.json"
    meta = json.loads(side.read_text())
    meta["source"]["weights"] = "0" * 64  # as if exported from another checkpoint
    side.write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match=r"sam_encoder\.onnx.*exported from sam weights 000000000000"):
        label_dataset(
            _cfg(
                world,
                tmp_path / "o2",
                tiny_clip_name,
                **{"label.backend": "ort", "label.engines": str(foreign)},
            )
        )
    assert not (tmp_path / "o2" / "labels").exists()
