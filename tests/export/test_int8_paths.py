"""int8 export paths (issue 20 items 1-3): external data through quantization and every later reader,
`build --precision int8 --calib` from the CLI, and an int8 op list for every spec kind."""

from __future__ import annotations

import importlib.util
import shutil
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from torch import nn

from zsplg_fast.export.artifact import Artifact, data_path, files_sha256, read_sidecar, sidecar_path
from zsplg_fast.export.precision import INT8_OP_TYPES, lint_qdq, precision_artifact, quantize_int8


class Net(nn.Module):
    """conv → relu → conv + residual → linear over channels (a weight MatMul)."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(3, 32, 3, 1, 1)
        self.b = nn.Conv2d(32, 32, 3, 1, 1)  # int8 weights over onnxruntime's 1 KiB inline threshold
        self.fc = nn.Linear(32, 4)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.a(image))
        x = x + self.b(x)
        return self.fc(x.permute(0, 2, 3, 1))


def _external_model(folder: Path) -> Path:
    """A small model saved with every initializer in external data (size_threshold=0)."""
    torch.manual_seed(0)
    path = folder / "net.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            Net().eval(),
            (torch.randn(1, 3, 16, 16),),
            str(folder / "inline.onnx"),
            input_names=["image"],
            output_names=["out"],
            opset_version=17,
            dynamo=False,
        )
    model = onnx.load(str(folder / "inline.onnx"))
    onnx.save_model(model, str(path), save_as_external_data=True, location="net.onnx.data", size_threshold=0)
    (folder / "inline.onnx").unlink()
    return path


def _calib(n: int = 3) -> list[dict[str, np.ndarray]]:
    g = np.random.default_rng(0)
    return [{"image": g.standard_normal((1, 3, 16, 16)).astype(np.float32)} for _ in range(n)]


def _run(path: Path, x: np.ndarray) -> np.ndarray:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"image": x})[0]


def _external_tensors(path: Path) -> int:
    model = onnx.load(str(path), load_external_data=False)
    return sum(onnx.external_data_helper.uses_external_data(t) for t in model.graph.initializer)


def test_int8_of_an_external_data_model_is_external_and_readable(tmp_path: Path) -> None:
    """Issue 20 (1): quant_pre_process / quantize_static get the external-data options; the output is
    x.onnx + x.onnx.data, onnxruntime runs it, the lint reads its scales from the data file."""
    src = _external_model(tmp_path)
    out = tmp_path / "q" / "net.int8.onnx"
    report = quantize_int8(src, out, _calib(), op_types=("Conv", "MatMul"))
    assert report.external_data and report.qdq_nodes > 0
    assert data_path(out).is_file() and _external_tensors(out) > 0
    assert not list(out.parent.glob(".*")), "no temp files left beside the output"
    x = _calib(1)[0]["image"]
    ref, got = _run(src, x), _run(out, x)
    assert float((ref * got).sum() / np.linalg.norm(ref) / np.linalg.norm(got)) > 0.99
    lint_qdq(out)
    # every tensor external, scales included: the lint still reads them (from the model's folder)
    moved = tmp_path / "all_external"
    moved.mkdir()
    model = onnx.load(str(out))
    onnx.save_model(
        model, str(moved / "m.onnx"), save_as_external_data=True, location="m.data", size_threshold=0
    )
    lint_qdq(moved / "m.onnx")


def test_int8_external_output_can_be_forced(tmp_path: Path) -> None:
    inline = tmp_path / "inline.onnx"
    onnx.save_model(onnx.load(str(_external_model(tmp_path))), str(inline))
    assert _external_tensors(inline) == 0
    out = tmp_path / "forced.int8.onnx"
    quantize_int8(inline, out, _calib(), op_types=("Conv",), external_data=True)
    assert data_path(out).is_file() and _external_tensors(out) > 0


def test_int8_precision_artifact_sidecar_covers_the_data_file(tmp_path: Path) -> None:
    """The derived sidecar names the data file and its sha256 covers model + data; the TRT parser path
    (has_qdq / check_precision) reads the external model."""
    from zsplg_fast.export.tensorrt import check_precision, has_qdq
    from zsplg_fast.utils.io import atomic_write_json

    src = _external_model(tmp_path)
    atomic_write_json(
        sidecar_path(src),
        {
            "name": "net",
            "spec": "custom",
            "precision": "fp32",
            "file": src.name,
            "external_data": data_path(src).name,
            "inputs": [{"name": "image", "dtype": "float32", "shape": [1, 3, 16, 16]}],
            "outputs": [{"name": "out", "dtype": "float32", "shape": [1, 16, 16, 4]}],
        },
    )
    art = precision_artifact(src, "int8", calibration=_calib())
    side = read_sidecar(art.path)
    assert side["external_data"] == "net.int8.onnx.data" and data_path(art.path).is_file()
    assert side["sha256"] == files_sha256([art.path, data_path(art.path)])
    assert side["precision_settings"]["external_data"] is True
    assert side["validation"]["worst_cosine"] > 0.95  # validation ran on the external model
    assert has_qdq(art.path)
    check_precision(art.path, side, "int8")
    assert Artifact.open(art.path).files[1] == data_path(art.path)


def test_every_spec_kind_has_an_int8_op_list() -> None:
    """Issue 20 (3): a registered spec without an entry would get the default list (transformer
    MatMuls quantized in SAM's decoders: -2.4 mIoU)."""
    from zsplg_fast.export.specs import SPECS

    missing = [name for name in SPECS if name not in INT8_OP_TYPES]
    assert not missing, f"specs without an int8 op list: {missing}"
    for name in ("sam_decoder", "sam_decoder_batched", "sam_decoder_image", "sam_decoder_shared"):
        assert "MatMul" not in INT8_OP_TYPES[name]
    from zsplg_fast.export.precision import int8_op_types

    assert int8_op_types("segmenter", "cpu") == ("Conv", "Relu", "Add", "MaxPool", "Concat", "Slice", "Pad")
    assert int8_op_types("segmenter") == ("Conv", "MatMul", "Gemm")  # TensorRT form (toy: 0.92 vs 0.21)


def _copy_artifacts(exported: dict[str, Any], names: tuple[str, ...], dst: Path) -> dict[str, Path]:
    dst.mkdir(parents=True, exist_ok=True)
    for n in names:
        for f in Artifact.open(exported[n].path).files:
            shutil.copyfile(f, dst / f.name)
    return {n: dst / Path(exported[n].path).name for n in names}


def _images(folder: Path, n: int = 2) -> Path:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    g = np.random.default_rng(3)
    for i in range(n):
        Image.fromarray(g.integers(0, 256, (48, 64, 3), dtype=np.uint8)).save(folder / f"im{i}.png")
    return folder


def _softmax_types(path: Path) -> set[int]:
    """Element types of every Softmax output of an ONNX model."""
    model = onnx.shape_inference.infer_shapes(onnx.load(str(path), load_external_data=False))
    g = model.graph
    types = {v.name: v.type.tensor_type.elem_type for v in [*g.value_info, *g.output]}
    return {types.get(n.output[0], 0) for n in g.node if n.op_type == "Softmax"}


def _dq_fed(path: Path, op: str) -> list[str]:
    """Nodes of type ``op`` with an input produced by a DequantizeLinear."""
    model = onnx.load(str(path), load_external_data=False)
    dq = {o for n in model.graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    return [n.name for n in model.graph.node if n.op_type == op and any(i in dq for i in n.input)]


def test_shared_decoder_int8_keeps_its_transformer_float(exported: dict[str, Any], tmp_path: Path) -> None:
    """sam_decoder_shared / sam_decoder_image calibrated on the feeds the labeler sends them: no MatMul
    reads a dequantized tensor; sam_decoder_image has nothing to quantize (its fp32 graph, 0 QDQ)."""
    from zsplg_fast.config import load_config
    from zsplg_fast.labeling.calibration import calibration_feeds

    names = ("sam_encoder", "sam_decoder_image", "sam_decoder_shared")
    paths = _copy_artifacts(exported, names, tmp_path / "export")
    cfg = load_config(None, {"amg.points_per_side": 4, "label.prompt_batch": 8})
    images = [np.random.default_rng(1).integers(0, 256, (48, 64, 3), dtype=np.uint8)]
    feeds = calibration_feeds(paths["sam_decoder_shared"], images, cfg, max_feeds=4)
    assert feeds and set(feeds[0]) >= {"image_tokens", "point_coords", "point_labels"}
    shared = precision_artifact(paths["sam_decoder_shared"], "int8", calibration=feeds)
    assert shared.sidecar["precision_settings"]["op_types"] == ["Conv", "Gemm"]
    assert not _dq_fed(shared.path, "MatMul")
    image_feeds = calibration_feeds(paths["sam_decoder_image"], images, cfg, max_feeds=2)
    assert set(image_feeds[0]) == {"image_embeddings"}
    image = precision_artifact(paths["sam_decoder_image"], "int8", calibration=image_feeds)
    assert image.sidecar["precision_settings"]["qdq_nodes"] == 0


def _main(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    """``zsplg-fast ARGV`` in-process through ``main`` (its one-line errors and exit codes)."""
    from zsplg_fast.cli.main import main

    with pytest.raises(SystemExit) as done:
        main(argv)
    out = capsys.readouterr()
    return int(done.value.code or 0), out.out + out.err


def test_cli_build_int8_calibrates_from_a_folder(
    exported: dict[str, Any],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Issue 20 (2): `build --precision int8 --calib DIR --calib-images N` makes the int8 ONNX from the
    images (the encoder's and decoder's recorded feeds), records the calibration in its sidecar, and
    then stops at the missing TensorRT with its one-line message (exit 2, no traceback). Issue 20 (14):
    for TensorRT the QDQ sits on the fp16 AutoCast graph (Softmax fp16 too), unless --int8-base fp32."""
    from zsplg_fast.export.trt_info import tensorrt_missing_reason

    if tensorrt_missing_reason() is None:
        pytest.skip("TensorRT is installed here: this test checks the path that stops before the build")
    paths = _copy_artifacts(exported, ("sam_encoder", "sam_decoder_batched"), tmp_path / "export")
    calib = _images(tmp_path / "calib", 3)
    monkeypatch.chdir(tmp_path)
    args = ["build", str(paths["sam_decoder_batched"]), "--precision", "int8", "--out", "engines"]
    args += ["--calib", str(calib), "--calib-images", "2", "--set", "amg.points_per_side=4"]
    args += ["--set", "label.prompt_batch=8"]
    fp16_base = importlib.util.find_spec("modelopt") is not None  # not imported: it patches onnxruntime
    if not fp16_base:  # without the [precision] extra, the fp32 base is asked for
        args += ["--int8-base", "fp32"]
    code, output = _main(args, capsys)
    assert code == 2, output
    assert "needs the 'tensorrt' package" in output and "Traceback" not in output
    int8 = tmp_path / "export" / "sam_decoder_batched.int8.onnx"
    side = read_sidecar(int8)
    assert side["precision"] == "int8" and side["precision_settings"]["qdq_nodes"] > 0
    assert side["calibration"]["source"] == str(calib) and side["calibration"]["images"] == 2
    assert side["calibration"]["feeds_used"] == side["precision_settings"]["calibration_batches"] > 0
    assert not _dq_fed(int8, "MatMul")
    if fp16_base:  # the default: ModelOpt's QDQ on the fp16 graph, Softmax in fp16
        assert side["precision_settings"]["base"] == "fp16" and "modelopt" in side["precision_tool"]
        assert _softmax_types(int8) == {onnx.TensorProto.FLOAT16}


def test_cli_build_int8_without_calibration_says_how(
    exported: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    paths = _copy_artifacts(exported, ("segmenter",), tmp_path / "export")
    args = ["build", str(paths["segmenter"]), "--precision", "int8", "--out", str(tmp_path / "engines")]
    code, output = _main(args, capsys)
    assert code == 2 and "--calib" in output, output
    assert not (tmp_path / "export" / "segmenter.int8.onnx").exists()


def test_int8_cpu_target_has_uint8_activations_and_is_not_for_tensorrt(tmp_path: Path) -> None:
    """The onnxruntime-CPU form: uint8 asymmetric activations (U8S8), int8 symmetric weights; the QDQ lint
    (TensorRT's rules) refuses it, which is why it is a separate target and never the `build` input."""
    from zsplg_fast.errors import ConfigError, QdqLintError

    src = _external_model(tmp_path)
    out = tmp_path / "cpu.int8.onnx"
    report = quantize_int8(src, out, _calib(), op_types=("Conv", "Relu", "Add"), target="cpu")
    assert report.target == "cpu" and report.activation_type == "uint8 (asymmetric)" and not report.symmetric
    model = onnx.load(str(out))
    inits = {i.name: i for i in model.graph.initializer}
    q = [n for n in model.graph.node if n.op_type == "QuantizeLinear"]
    assert q and all(inits[n.input[2]].data_type == onnx.TensorProto.UINT8 for n in q)
    x = _calib(1)[0]["image"]
    ref, got = _run(src, x), _run(out, x)
    assert float((ref * got).sum() / np.linalg.norm(ref) / np.linalg.norm(got)) > 0.97  # random net
    with pytest.raises(QdqLintError):
        lint_qdq(out)
    with pytest.raises(ConfigError, match="int8 target"):
        quantize_int8(src, tmp_path / "x.onnx", _calib(), target="gpu")


def test_int8_on_the_fp16_graph(exported: dict[str, Any], tmp_path: Path) -> None:
    """Issue 20 (14): int8_base fp16 puts the QDQ on the AutoCast-style fp16 graph (ModelOpt): the
    quantized Convs read int8, the rest computes in fp16, I/O fp32; TensorRT's lint passes, onnxruntime
    CPU runs it close to fp32; an int8 made on the other base is refused, not silently reused."""
    import importlib.util

    if importlib.util.find_spec("modelopt") is None:  # not imported here: it patches onnxruntime
        pytest.skip("nvidia-modelopt is not installed (the [precision] extra)")
    from zsplg_fast.errors import OutputExistsError

    paths = _copy_artifacts(exported, ("segmenter",), tmp_path / "export")
    g = np.random.default_rng(0)
    calib = [{"image": g.standard_normal((1, 3, 64, 80)).astype(np.float32)} for _ in range(2)]
    art = precision_artifact(paths["segmenter"], "int8", calibration=calib, int8_base="fp16")
    side = art.sidecar
    assert side["precision"] == "int8" and side["precision_settings"]["base"] == "fp16"
    assert "modelopt" in side["precision_tool"] and side["onnxruntime_cpu_optimization"] == "basic"
    assert side["validation"]["worst_cosine"] > 0.99
    model = onnx.load(str(art.path))
    types = {i.name: i.data_type for i in model.graph.initializer}
    dq_scales = [types.get(n.input[1]) for n in model.graph.node if n.op_type == "DequantizeLinear"]
    assert dq_scales and set(dq_scales) == {onnx.TensorProto.FLOAT16}  # QDQ in the fp16 graph
    assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    lint_qdq(art.path)
    with pytest.raises(OutputExistsError, match="made by nvidia-modelopt"):
        precision_artifact(paths["segmenter"], "int8", calibration=calib)  # fp32 base asked now
