"""``onnx-int8`` (dynamic int8): each spec's measured op list applies, and the probe feeds are valid
for any tokenizer (the toy CLIP's vocabulary has 47 ids; a probe id of 1000 crashed its text tower)."""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest
from typer.testing import CliRunner

from zsplg_fast.export.artifact import read_sidecar
from zsplg_fast.export.quantize import dynamic_op_types, quantize_artifact


def test_dynamic_op_types_follow_the_spec_op_lists() -> None:
    assert dynamic_op_types("clip_text") == ["MatMul"]
    assert dynamic_op_types("sam_decoder_batched") == ["Gemm"]  # the two-way transformer stays float
    assert dynamic_op_types("sam2_decoder_batched") == ["Gemm"]
    assert dynamic_op_types("sam_decoder_image") == []
    assert dynamic_op_types(None) == ["MatMul", "Gemm"]  # a hand-made ONNX: the default list


def test_toy_clip_text_exports_as_onnx_int8(tmp_path: Path) -> None:
    from zsplg_fast.cli.main import app

    out = tmp_path / "clip"
    res = CliRunner().invoke(
        app,
        [
            "export",
            "clip",
            "--clip",
            "toy",
            "--only",
            "clip_text",
            "--format",
            "onnx-int8",
            "--out",
            str(out),
        ],
    )
    assert res.exit_code == 0, res.output
    side = read_sidecar(out / "clip_text.int8.onnx")
    assert side["quantization"]["op_types"] == ["MatMul"]
    assert all(o["cosine"] > 0.99 for o in side["fidelity"]["outputs"]), side["fidelity"]
    ops = [n.op_type for n in onnx.load(str(out / "clip_text.int8.onnx")).graph.node]
    assert "MatMulInteger" in ops


def test_a_spec_with_nothing_to_quantize_gets_its_fp32_graph(exported: dict, tmp_path: Path) -> None:
    src = Path(exported["sam_decoder_image"].path)
    q = quantize_artifact(src, force=True)
    side = q.sidecar
    assert side["quantization"]["op_types"] == []
    ops = {n.op_type for n in onnx.load(str(q.path)).graph.node}
    assert not {"DynamicQuantizeLinear", "MatMulInteger", "ConvInteger"} & ops
    assert all(o["max_abs"] == pytest.approx(0.0, abs=1e-6) for o in side["fidelity"]["outputs"])
