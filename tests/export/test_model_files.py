"""Corrupt or truncated model files (ONNX, checkpoints) are one typed error naming the file and the fix,
at every loading point: onnxruntime sessions (label --backend ort / --engines, infer, bench, deploy),
``inspect`` / ``build`` reading the graph, and the checkpoint loaders."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from zsplg_fast.cli.main import app
from zsplg_fast.errors import ModelFileError


def _bad_copies(src: Path, root: Path, suffix: str) -> dict[str, Path]:
    """A random-bytes file and a half-truncated copy of ``src``."""
    root.mkdir(parents=True, exist_ok=True)
    rand = root / f"random{suffix}"
    rand.write_bytes(np.random.default_rng(1).bytes(4096))
    trunc = root / f"truncated{suffix}"
    data = src.read_bytes()
    trunc.write_bytes(data[: len(data) // 2])
    return {"random": rand, "truncated": trunc}


@pytest.fixture(scope="module")
def good_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("onnx") / "conv.onnx"
    torch.onnx.export(torch.nn.Conv2d(3, 2, 3), (torch.zeros(1, 3, 8, 8),), str(path), dynamo=False)
    return path


@pytest.mark.parametrize("kind", ["random", "truncated"])
def test_ort_engine_names_the_file_and_the_fix(good_onnx: Path, tmp_path: Path, kind: str) -> None:
    from zsplg_fast.engines import load_engine

    bad = _bad_copies(good_onnx, tmp_path, ".onnx")[kind]
    with pytest.raises(ModelFileError, match="not a valid ONNX model") as err:
        load_engine(bad, backend="ort")  # the session every ort path opens (label, infer, bench, deploy)
    assert str(bad) in str(err.value) and "export it again" in str(err.value)


@pytest.mark.parametrize("kind", ["random", "truncated"])
def test_inspect_and_build_graph_reader(good_onnx: Path, tmp_path: Path, kind: str) -> None:
    from zsplg_fast.export.model_files import load_onnx

    bad = _bad_copies(good_onnx, tmp_path, ".onnx")[kind]
    with pytest.raises(ModelFileError, match="export it again"):
        load_onnx(bad)
    (tmp_path / f"{bad.stem}.json").write_text(json.dumps({"sidecar_version": 1, "name": "x"}))
    res = CliRunner().invoke(app, ["inspect", str(bad)])
    assert isinstance(res.exception, ModelFileError), res.output
    assert str(bad) in str(res.exception)


@pytest.mark.parametrize("kind", ["random", "truncated"])
def test_infer_on_a_deploy_folder_with_a_corrupt_model(good_onnx: Path, tmp_path: Path, kind: str) -> None:
    from zsplg_fast.deploy import infer

    bad = _bad_copies(good_onnx, tmp_path / "bad", ".onnx")[kind]
    deploy = tmp_path / "deploy"
    deploy.mkdir()
    os.replace(bad, deploy / "model.onnx")
    side = {"sidecar_version": 1, "class_names": ["a", "b"], "inputs": [], "outputs": []}
    (deploy / "model.json").write_text(json.dumps(side))
    Image.new("RGB", (8, 8)).save(tmp_path / "x.png")
    with pytest.raises(ModelFileError, match="not a valid ONNX model"):
        infer(deploy, tmp_path / "x.png", tmp_path / "out")


@pytest.mark.parametrize("kind", ["random", "truncated"])
def test_checkpoint_loaders(tmp_path: Path, kind: str) -> None:
    from zsplg_fast.models.sam import read_sam_state_dict
    from zsplg_fast.models.segmenter import build_segmenter, load_checkpoint, save_checkpoint

    torch.manual_seed(0)
    good = tmp_path / "seg.pth"
    save_checkpoint(good, build_segmenter("tiny", 3), ["a", "b", "c"])
    assert load_checkpoint(good)[1]["class_names"] == ["a", "b", "c"]
    bad = _bad_copies(good, tmp_path / "bad", ".pth")[kind]
    with pytest.raises(ModelFileError, match="not a valid torch checkpoint") as err:
        load_checkpoint(bad)  # deploy, bench, evaluate, export and enhance all load through here
    assert str(bad) in str(err.value) and "again" in str(err.value)
    from zsplg_fast.errors import CheckpointError

    with pytest.raises(CheckpointError, match="re-download"):
        read_sam_state_dict(bad)


@pytest.mark.parametrize("kind", ["random", "truncated"])
def test_cli_label_engines_and_deploy(good_onnx: Path, tmp_path: Path, kind: str) -> None:
    """`label --backend ort --engines DIR` and `deploy --checkpoint` end in one line naming the file."""
    from zsplg_fast.models import resolve_sam_checkpoint, weights_fingerprint
    from zsplg_fast.models.segmenter import build_segmenter, save_checkpoint

    engines = tmp_path / "engines"
    bad = _bad_copies(good_onnx, engines, ".onnx")[kind]
    os.replace(bad, engines / "sam_encoder.onnx")
    source = {"weights": weights_fingerprint(resolve_sam_checkpoint("toy"))}
    (engines / "sam_encoder.json").write_text(json.dumps({"sidecar_version": 1, "source": source}))
    (tmp_path / "images").mkdir()
    Image.new("RGB", (32, 32)).save(tmp_path / "images" / "a.png")
    (tmp_path / "classes.txt").write_text("background\ncircle\n")
    args = ["label", "--data", f"folder:{tmp_path / 'images'}", "--classes", str(tmp_path / "classes.txt")]
    args += ["--sam", "toy", "--clip", "toy", "--backend", "ort", "--engines", str(engines)]
    res = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "zs")])
    assert isinstance(res.exception, ModelFileError), res.output
    assert str(engines / "sam_encoder.onnx") in str(res.exception)

    good = tmp_path / "seg.pth"
    save_checkpoint(good, build_segmenter("tiny", 2), ["a", "b"])
    ckpt = _bad_copies(good, tmp_path / "ckpt", ".pth")[kind]
    from zsplg_fast.data import write_label

    write_label(tmp_path / "images" / "a_gt.png", np.zeros((32, 32), np.uint8))
    (tmp_path / "val.txt").write_text("a.png a_gt.png\n")
    args = [
        "deploy",
        "--checkpoint",
        str(ckpt),
        "--precision",
        "fp32",
        "--val",
        f"folder:{tmp_path / 'images'}",
    ]
    args += ["--val-split", str(tmp_path / "val.txt")]
    res = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "deploy")])
    assert isinstance(res.exception, ModelFileError) and str(ckpt) in str(res.exception), res.output
    assert not (tmp_path / "deploy").exists()
