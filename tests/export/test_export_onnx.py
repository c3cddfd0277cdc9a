"""Exporter behaviour: external data, drift is fatal and leaves nothing, no overwrite, typed failures, CLI."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from zsplg_fast.engines.base import load_engine
from zsplg_fast.errors import ConfigError, ExportFailedError, ExportValidationError, OutputExistsError
from zsplg_fast.export.artifact import read_sidecar
from zsplg_fast.export.onnx import export_onnx
from zsplg_fast.export.specs import get_spec
from zsplg_fast.export.specs.base import Prepared
from zsplg_fast.export.tensors import TensorSpec, Tolerance

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::DeprecationWarning")


def test_external_data_artifact_loads_validates_and_moves(tiny_sam: Any, tmp_path: Path) -> None:
    p = get_spec("sam_decoder_batched").bind(tiny_sam)
    art = export_onnx(p, tmp_path / "a", external_data=True)
    data = tmp_path / "a" / "sam_decoder_batched.onnx.data"
    assert data.is_file() and data.stat().st_size > 0.9 * art.path.stat().st_size
    assert art.sidecar["external_data"] == data.name and art.sidecar["validation"]["passed"]
    assert art.path.stat().st_size < 0.15 * data.stat().st_size  # the weights are not inline
    moved = tmp_path / "moved"
    shutil.copytree(tmp_path / "a", moved)  # relative location: the pair moves together
    shutil.rmtree(tmp_path / "a")
    feeds = {k: v.numpy() for k, v in p.validation[1].items()}
    out = load_engine(moved / "sam_decoder_batched.onnx")(feeds)
    with torch.no_grad():
        ref = p.module(*p.validation[1].values())
    np.testing.assert_allclose(out["low_res_masks"], ref[0].numpy(), atol=1e-4)


class _Perturbed(nn.Module):
    """A model whose exported graph differs from eager PyTorch (as a faulty conversion would)."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.lin(x)
        if torch.onnx.is_in_onnx_export() or torch.compiler.is_exporting():
            y = y + 0.05 * y.abs().mean()
        return y


def _perturbed(exporter: str) -> Prepared:
    g = torch.Generator().manual_seed(0)
    return Prepared(
        module=_Perturbed().eval(),
        inputs=(TensorSpec("x", "float32", ("batch", 8)),),
        outputs=(TensorSpec("y", "float32", ("batch", 4)),),
        dummy={"x": torch.randn(2, 8, generator=g)},
        validation=[{"x": torch.randn(3, 8, generator=g)}],
        tolerances={"y": Tolerance()},
        name="perturbed",
        exporter=exporter,
    )


@pytest.mark.parametrize("exporter", ["legacy", "dynamo"])
def test_drift_is_fatal_and_leaves_nothing(exporter: str, tmp_path: Path) -> None:
    with pytest.raises(ExportValidationError) as err:
        export_onnx(_perturbed(exporter), tmp_path)
    assert err.value.output == "y" and err.value.max_abs > 1e-3
    assert "allow-drift" in str(err.value)
    assert list(tmp_path.iterdir()) == []  # no .onnx, no .json, no temp folder


def test_allow_drift_keeps_artifact_and_records_it(tmp_path: Path) -> None:
    art = export_onnx(_perturbed("legacy"), tmp_path, allow_drift=True)
    v = read_sidecar(art.path)["validation"]
    assert v["allow_drift"] and not v["passed"] and v["drifting_outputs"] == ["y"]


def test_never_overwrites_without_force(tiny_sam: Any, tmp_path: Path) -> None:
    p = get_spec("sam_decoder_batched").bind(tiny_sam)
    (tmp_path / "sam_decoder_batched.onnx").write_text("user file")
    with pytest.raises(OutputExistsError):
        export_onnx(p, tmp_path)
    assert (tmp_path / "sam_decoder_batched.onnx").read_text() == "user file"
    with pytest.raises(OutputExistsError, match="not written by zsplg-fast"):
        export_onnx(p, tmp_path, force=True)  # --force replaces only our own artifacts
    assert (tmp_path / "sam_decoder_batched.onnx").read_text() == "user file"
    (tmp_path / "sam_decoder_batched.onnx").unlink()
    first = export_onnx(p, tmp_path)
    with pytest.raises(OutputExistsError, match="--force"):
        export_onnx(p, tmp_path)
    art = export_onnx(p, tmp_path, force=True)
    assert art.sidecar["validation"]["passed"] and art.sidecar["created"] >= first.sidecar["created"]


def test_exporter_failure_is_typed(tmp_path: Path) -> None:
    class Untraceable(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if torch.compiler.is_exporting():
                raise NotImplementedError("aten::frobnicate has no ONNX translation")
            return x

    p = _perturbed("dynamo")
    p.module = Untraceable().eval()
    with pytest.raises(ExportFailedError, match="--exporter legacy"):
        export_onnx(p, tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_opset_and_exporter_checked(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="opset"):
        export_onnx(_perturbed("legacy"), tmp_path, opset=16)
    with pytest.raises(ConfigError, match="exporter"):
        export_onnx(_perturbed("legacy"), tmp_path, exporter="tracing")


def test_cli_export_inspect_and_refusals(tiny_sam_ckpt: Path, tmp_path: Path) -> None:
    from zsplg_fast.cli.main import app

    runner = CliRunner()
    out = tmp_path / "cli"
    args = ["export", "sam", "--sam", "tiny", "--sam-checkpoint", str(tiny_sam_ckpt), "--out", str(out)]
    res = runner.invoke(
        app, [*args, "--only", "sam_decoder_batched", "--format", "onnx-int8", "--precision", "int8"]
    )
    assert res.exit_code == 0, res.output
    assert "sam_decoder_batched" in res.output and "exported" in res.output and "quantized" in res.output
    assert (out / "sam_decoder_batched.onnx").is_file() and not (out / "sam_encoder.onnx").exists()
    q = out / "sam_decoder_batched.int8.onnx"
    side = read_sidecar(q)
    assert side["precision"] == "int8" and side["quantization"]["from"]["file"] == "sam_decoder_batched.onnx"
    assert side["quantization"]["op_types"] == ["Gemm"]  # its spec's list: the transformer stays float
    assert all(o["cosine"] > 0.99 for o in side["fidelity"]["outputs"]), side["fidelity"]
    import onnx

    ops = {n.op_type for n in onnx.load(str(q)).graph.node}
    assert "MatMulInteger" not in ops
    feeds = {
        "image_embeddings": np.zeros((1, 128, 16, 16), np.float32),
        "point_coords": np.full((2, 1, 2), 100.0, np.float32),
        "point_labels": np.ones((2, 1), np.float32),
    }
    assert load_engine(q)(feeds)["low_res_masks"].shape == (2, 3, 64, 64)
    res = runner.invoke(app, ["inspect", str(out / "sam_decoder_batched.onnx")])
    assert res.exit_code == 0 and "num_points" in res.output and "point_labels" in res.output
    res = runner.invoke(app, [*args, "--precision", "int8"])
    assert isinstance(res.exception, ConfigError) and "valid: fp32" in str(res.exception)
    res = runner.invoke(app, ["inspect", "--formats"])
    assert res.exit_code == 0 and "tensorrt" in res.output


def test_formats_table_refuses_options_with_valid_choices() -> None:
    from zsplg_fast.export.formats import check_options

    check_options("onnx", {"precision": "fp32", "opset": 18})
    check_options("tensorrt", {"precision": "int8", "profiles": ["batch=1:2:4"]})
    with pytest.raises(ConfigError, match="valid: fp32"):
        check_options("onnx", {"precision": "int8"})
    with pytest.raises(ConfigError, match="--profiles"):
        check_options("onnx", {"profiles": ["batch=1:2:4"]})
    with pytest.raises(ConfigError, match="fp32, fp16, bf16, int8"):
        check_options("tensorrt", {"precision": "int4"})
    with pytest.raises(ConfigError, match="onnx, onnx-int8, tensorrt"):
        check_options("coreml", {})
