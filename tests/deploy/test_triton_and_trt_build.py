"""The deploy folder for NVIDIA targets: the strongly typed TensorRT build lines (zsplg-fast and trtexec)
and a Triton model repository that Triton's model-config schema accepts (parsed with protobuf's
text_format into inference.ModelConfig: tritonclient's when installed, else the documented schema)."""

from __future__ import annotations

import importlib.util
import os
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
from google.protobuf import text_format

from zsplg_fast.deploy.readme import build_command, trtexec_command
from zsplg_fast.deploy.triton import config_pbtxt, model_config_class, validate_repository
from zsplg_fast.errors import ConfigError, MissingDependencyError
from zsplg_fast.export.artifact import read_sidecar

SHAPES = "--minShapes=image:1x3x256x256 --optShapes=image:1x3x512x512 --maxShapes=image:8x3x1024x1024"


def test_build_lines_are_strongly_typed(int8_deploy: tuple[Path, dict]) -> None:
    out, _ = int8_deploy
    side = read_sidecar(out / "model.onnx")
    trtexec = f"trtexec --onnx=model.onnx --stronglyTyped {SHAPES} --saveEngine=model.int8.plan"
    assert trtexec_command(side) == trtexec
    zb = build_command(side)
    assert zb.startswith("zsplg-fast build model.onnx --precision int8 --out engines --profile ")
    assert {"batch=1:1:8", "height=256:512:1024", "width=256:512:1024"} <= {
        a.split(" ")[-1] for a in zb.split(" --profile ")[1:]
    }
    script = out / "build_tensorrt.sh"
    assert os.access(script, os.X_OK) and zb in script.read_text() and trtexec in script.read_text()
    assert subprocess.run(["bash", "-n", str(script)], check=False).returncode == 0


@pytest.mark.skipif(importlib.util.find_spec("tensorrt") is not None, reason="tensorrt is installed here")
def test_the_build_command_is_one_the_cli_accepts(int8_deploy: tuple[Path, dict], tmp_path: Path) -> None:
    """Run the recorded command: options parse and the precision matches the graph; only TensorRT is
    missing here."""
    from typer.testing import CliRunner

    from zsplg_fast.cli.main import app

    out, _ = int8_deploy
    work = tmp_path / "target"
    shutil.copytree(out, work)
    args = shlex.split(build_command(read_sidecar(work / "model.onnx")))[1:]
    cwd = os.getcwd()
    try:
        os.chdir(work)
        result = CliRunner().invoke(app, args)
    finally:
        os.chdir(cwd)
    assert isinstance(result.exception, MissingDependencyError), result.output  # past options + precision
    assert "tensorrt" in str(result.exception) and "building TensorRT engines" in str(result.exception)


def test_triton_repository_is_accepted(int8_deploy: tuple[Path, dict]) -> None:
    out, _ = int8_deploy
    folder = out / "triton" / "segmenter"
    assert (folder / "1" / "model.onnx").read_bytes() == (out / "model.onnx").read_bytes()
    cfg = validate_repository(folder)
    assert cfg.name == "segmenter" and cfg.platform == "onnxruntime_onnx" and cfg.max_batch_size == 8
    assert [(t.name, list(t.dims)) for t in cfg.input] == [("image", [3, -1, -1])]
    assert [(t.name, list(t.dims)) for t in cfg.output] == [("logits", [4, -1, -1])]
    assert cfg.instance_group[0].count == 1 and cfg.instance_group[0].kind == 1  # KIND_GPU
    assert model_config_class()[1]  # says which schema checked it
    assert cfg.HasField("dynamic_batching")  # Triton groups requests up to max_batch_size
    assert list(cfg.dynamic_batching.preferred_batch_size) == [8]  # profile batch 1:1:8 → opt 1 dropped
    assert cfg.dynamic_batching.max_queue_delay_microseconds == 500
    note = (out / "triton" / "README.md").read_text()
    assert "[0.485, 0.456, 0.406]" in note and "[0.229, 0.224, 0.225]" in note and "argmax" in note


@pytest.mark.parametrize(
    ("edit", "why"),
    [
        (lambda t: t.replace("max_batch_size", "max_batch"), "not a ModelConfig"),  # unknown field
        (lambda t: t.replace("TYPE_FP32", "FP32", 1), "not a ModelConfig"),  # not a DataType
        (lambda t: t.replace('name: "segmenter"', 'name: "seg"'), "folder name"),
        (lambda t: t.replace("dims: [ 3, -1, -1 ]", "dims: [ 1, 3, -1, -1 ]"), "rank"),
        (lambda t: t.replace("TYPE_FP32", "TYPE_FP16", 1), "data_type"),
        (lambda t: t.replace('name: "logits"', 'name: "probs"'), "graph's"),
        (lambda t: t.replace('platform: "onnxruntime_onnx"', 'platform: "tensorrt_plan"'), "onnxruntime"),
        (lambda t: t.replace("max_queue_delay_microseconds", "max_queue_delay_ms"), "not a ModelConfig"),
        (lambda t: t.replace("preferred_batch_size: [ 8 ]", "preferred_batch_size: [ 16 ]"), "1..max_batch"),
    ],
)
def test_triton_rules_refuse_a_bad_config(int8_deploy: tuple[Path, dict], tmp_path: Path, edit, why) -> None:  # type: ignore[no-untyped-def]
    folder = tmp_path / "segmenter"
    shutil.copytree(int8_deploy[0] / "triton" / "segmenter", folder)
    text = (folder / "config.pbtxt").read_text()
    (folder / "config.pbtxt").write_text(edit(text))
    with pytest.raises(ConfigError, match=why):
        validate_repository(folder)


def test_config_without_batching_keeps_every_axis() -> None:
    side = {
        "inputs": [{"name": "x", "dtype": "uint8", "shape": ["batch", "height", "width", 3]}],
        "outputs": [{"name": "y", "dtype": "int64", "shape": ["batch", 7]}],
        "profiles": {"batch": [1, 4, 16]},
    }
    text = config_pbtxt(side, "m")
    assert "preferred_batch_size: [ 4, 16 ]" in text and "max_queue_delay_microseconds: 500" in text
    cfg = text_format.Parse(text, model_config_class()[0]())  # the documented schema reads it
    assert list(cfg.dynamic_batching.preferred_batch_size) == [4, 16] and cfg.max_batch_size == 16
    assert "max_batch_size: 16" in text and "TYPE_UINT8" in text and "dims: [ -1, -1, 3 ]" in text
    assert "dims: [ 7 ]" in text and "TYPE_INT64" in text
