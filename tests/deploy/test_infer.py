"""infer: label PNGs (+ overlays) per image, bad images skipped and recorded, predictions = evaluate's."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from zsplg_fast.data import read_label
from zsplg_fast.deploy import infer
from zsplg_fast.errors import ConfigError, MissingDependencyError, OutputExistsError


@pytest.fixture
def images(shapes_ds: Path, tmp_path: Path) -> Path:
    """The 12 val images (3 of them in a sub-folder) plus an empty file and a text file named .png."""
    root = tmp_path / "images"
    (root / "sub").mkdir(parents=True)
    for i, p in enumerate(sorted((shapes_ds / "JPEGImages").glob("val_*.jpg"))):
        shutil.copy(p, (root / "sub" if i < 3 else root) / p.name)
    (root / "empty.jpg").write_bytes(b"")
    (root / "notes.png").write_text("not an image")
    return root


def test_writes_labels_overlays_and_records_bad_images(
    int8_deploy: tuple[Path, dict], images: Path, tmp_path: Path
) -> None:
    deploy_dir, _ = int8_deploy
    out = tmp_path / "preds"
    seen: list[str] = []
    report = infer(deploy_dir, images, out, overlays=True, progress=lambda d, n, sid: seen.append(sid))
    assert report["images"] == 14 and report["written"] == 12 and report["failed"] == 2
    assert len(seen) == 14
    labels = sorted(p.relative_to(out / "labels").as_posix() for p in (out / "labels").rglob("*.png"))
    assert len(labels) == 12 and "sub/val_00000.png" in labels
    lab = read_label(out / "labels" / "sub" / "val_00000.png")
    assert lab.dtype == np.uint8 and set(np.unique(lab)) <= {0, 1, 2, 3}
    assert len(list((out / "overlays").rglob("*.png"))) == 12
    errors = [json.loads(line) for line in (out / "errors.jsonl").read_text().splitlines()]
    assert sorted(e["id"] for e in errors) == ["empty", "notes"]
    assert all(e["error"] == "InputImageError" for e in errors)
    assert json.loads((out / "report.json").read_text())["failed"] == 2
    with pytest.raises(OutputExistsError):
        infer(deploy_dir, images, out)


def test_single_image_and_unknown_backend(
    int8_deploy: tuple[Path, dict], shapes_ds: Path, tmp_path: Path
) -> None:
    deploy_dir, _ = int8_deploy
    img = shapes_ds / "JPEGImages" / "val_00001.jpg"
    report = infer(deploy_dir, img, tmp_path / "one")
    assert report["written"] == 1 and (tmp_path / "one" / "labels" / "val_00001.png").is_file()
    with pytest.raises(ConfigError):
        infer(deploy_dir, img, tmp_path / "two", backend="tflite")


def test_trt_backend_without_tensorrt_is_a_clear_error(
    int8_deploy: tuple[Path, dict], shapes_ds: Path, tmp_path: Path
) -> None:
    from zsplg_fast.export.trt_info import tensorrt_missing_reason

    if tensorrt_missing_reason() is None:
        pytest.skip("tensorrt is installed here")
    with pytest.raises(MissingDependencyError):
        infer(int8_deploy[0], shapes_ds / "JPEGImages" / "val_00001.jpg", tmp_path / "t", backend="trt")


def test_predictions_match_evaluate(
    int8_deploy: tuple[Path, dict], trained_ckpt: Path, shapes_ds: Path, tmp_path: Path
) -> None:
    """infer --backend torch = the training engineer's predict() per pixel; folder mIoU = evaluate's, and
    infer on the INT8 model scores what deploy measured for it."""
    from zsplg_fast.data import open_source
    from zsplg_fast.models.segmenter import load_checkpoint
    from zsplg_fast.train.datasets import ValSet
    from zsplg_fast.train.evaluate import evaluate_folders, evaluate_model, predict

    deploy_dir, result = int8_deploy
    val = open_source(f"synthetic:{shapes_ds}", "val").samples
    src = tmp_path / "val"
    src.mkdir()
    for s in val:
        shutil.copy(s.image_path, src / s.image_path.name)
    infer(deploy_dir, src, tmp_path / "torch", backend="torch")
    model, ckpt = load_checkpoint(trained_ckpt)
    ds = ValSet(val)
    for i, s in enumerate(val):
        img, _, _ = ds[i]
        want = predict(model, img.unsqueeze(0)).argmax(1)[0].to(torch.uint8).numpy()
        got = read_label(tmp_path / "torch" / "labels" / f"{s.id}.png")
        np.testing.assert_array_equal(got, want)
    names = ckpt["class_names"]
    gt = shapes_ds / "SegmentationClass"
    folder = evaluate_folders(tmp_path / "torch" / "labels", gt, names, missing="skip")
    assert folder["images"] == 12
    assert folder["miou"] == pytest.approx(evaluate_model(model, val, len(names)).miou(), abs=1e-9)
    infer(deploy_dir, src, tmp_path / "ort", backend="ort")
    folder = evaluate_folders(tmp_path / "ort" / "labels", gt, names, missing="skip")
    assert folder["miou"] == pytest.approx(result["miou"]["deployed"], abs=1e-3)


def test_cli_infer(int8_deploy: tuple[Path, dict], images: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from zsplg_fast.cli.main import app

    out = tmp_path / "cli"
    result = CliRunner().invoke(
        app, ["infer", str(int8_deploy[0]), "--input", str(images), "--out", str(out)]
    )
    assert result.exit_code == 3, result.output  # done, but 2 images failed (errors.jsonl)
    assert "12 of 14 images" in result.output and "2 images skipped" in result.output
    assert len(list((out / "labels").rglob("*.png"))) == 12 and not (out / "overlays").exists()


def test_plan_sizes_are_respected_and_reported(
    int8_deploy: tuple[Path, dict], shapes_ds: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A TensorRT segmenter plan covers a range of sizes: infer says which, and records an image outside
    it (instead of a TensorRT failure) while the others are labeled."""
    import importlib

    from PIL import Image

    from zsplg_fast.engines.ort import OrtEngine

    infer_mod = importlib.import_module("zsplg_fast.deploy.infer")  # the package exports the function

    def plan_like(d: Path, side: dict, out: Path, threads: int | None) -> Any:
        engine = OrtEngine(d / "model.onnx")
        engine.profiles = {"image": ((1, 3, 64, 64), (1, 3, 96, 96), (1, 3, 128, 128))}  # type: ignore[attr-defined]
        return infer_mod.EnginePredictor(engine, side)

    monkeypatch.setitem(infer_mod.ENGINES, "trt", plan_like)
    src = tmp_path / "in"
    src.mkdir()
    shutil.copy(shapes_ds / "JPEGImages" / "val_00001.jpg", src / "small.jpg")  # 96 x 96
    Image.new("RGB", (200, 90), (30, 60, 90)).save(src / "wide.png")  # W 200 > 128
    report = infer(int8_deploy[0], src, tmp_path / "out", backend="trt")
    assert report["written"] == 1 and report["failed"] == 1 and report["sizes_covered"] == "64x64 to 128x128"
    (error,) = [json.loads(line) for line in (tmp_path / "out" / "errors.jsonl").read_text().splitlines()]
    assert error["id"] == "wide" and error["error"] == "FeedError"
    assert "90x200" in error["message"] and "64x64 to 128x128" in error["message"]
    assert infer(int8_deploy[0], src / "small.jpg", tmp_path / "o2")["sizes_covered"] == "any"


def test_a_failed_write_stops_infer_with_one_line_and_no_temp(
    int8_deploy: tuple[Path, dict], images: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import errno
    import os

    from zsplg_fast.errors import OutputWriteError

    deploy_dir, _ = int8_deploy
    real_fsync, calls = os.fsync, [0]

    def full_after_two(fd: int) -> None:  # the marker and one label fit, then the disk is full
        calls[0] += 1
        if calls[0] > 2:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_fsync(fd)

    monkeypatch.setattr("zsplg_fast.utils.io.os.fsync", full_after_two)
    out = tmp_path / "preds"
    seen: list[str] = []
    with pytest.raises(OutputWriteError, match="No space left on device") as err:
        infer(deploy_dir, images, out, progress=lambda d, n, sid: seen.append(sid))
    assert str(err.value).startswith(str(out / "labels")) and "\n" not in str(err.value)
    assert len(seen) <= 4  # (2 bad images + 1 written): it stopped instead of running on
    assert len(list((out / "labels").rglob("*.png"))) == 1
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")]


def _swap_model(deploy_dir: Path, into: Path, other: Path | None) -> Path:
    """A copy of the deploy folder whose model.onnx is ``other`` (another model's file), or the same
    model with one weight byte changed (same size) when ``other`` is None."""
    shutil.copytree(deploy_dir, into)
    model = into / "model.onnx"
    if other is not None:
        shutil.copyfile(other, model)
    else:
        data = bytearray(model.read_bytes())
        data[len(data) // 2] ^= 0x01
        model.write_bytes(bytes(data))
    return model


@pytest.mark.parametrize("swap", ["other-model", "same-size"])
def test_a_swapped_model_is_refused_by_infer_and_inspect(
    int8_deploy: tuple[Path, dict],
    shapes_ds: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    swap: str,
) -> None:
    """Issue 21.1: a deploy folder whose model.onnx came from another run gave exit 0; now exit 2, one
    line naming the file, the recorded and found sha256 and the fix; nothing is written."""
    import hashlib

    from zsplg_fast.cli.main import main

    deploy_dir, _ = int8_deploy
    other = tmp_path / "other.onnx"
    torch.onnx.export(torch.nn.Conv2d(3, 4, 1), (torch.zeros(1, 3, 8, 8),), str(other), dynamo=False)
    model = _swap_model(deploy_dir, tmp_path / "swapped", other if swap == "other-model" else None)
    recorded = json.loads((tmp_path / "swapped" / "model.json").read_text())["files"]["model.onnx"]
    found = hashlib.sha256(model.read_bytes()).hexdigest()
    img = shapes_ds / "JPEGImages" / "val_00001.jpg"
    for argv in (
        ["infer", str(tmp_path / "swapped"), "--input", str(img), "--out", str(tmp_path / "out")],
        ["inspect", str(model)],
    ):
        with pytest.raises(SystemExit) as done:
            main(argv)
        err = capsys.readouterr().err.strip()
        assert done.value.code == 2, err
        line = " ".join(err.split())  # rich wraps long lines on the console
        assert line.startswith("error: ArtifactIntegrityError:") and str(model) in line
        assert recorded["sha256"] in line and found in line and "deploy" in line
    assert not (tmp_path / "out").exists()
    with pytest.raises(SystemExit) as done:  # the folder as deploy wrote it: checked and shown
        main(["inspect", str(deploy_dir / "model.onnx")])
    assert done.value.code in (0, None)
    assert "integrity: ok, size and sha256 match the sidecar" in capsys.readouterr().out
