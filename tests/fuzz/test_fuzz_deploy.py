"""Fuzzed deploy folders (``model.json`` sidecar, ``model.onnx``) through ``infer`` and ``inspect``.

The folder is built by hand, as ``deploy`` lays it out: a one-layer segmenter graph (a 1x1 convolution
from RGB to 3 class logits, made with ``onnx.helper``: the readers are under test, not the exporter) and
its sidecar with the fields ``deploy`` writes (IO, profiles, preprocessing, classes, palette, deploy block,
sha256 and size of the model file)."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from PIL import Image

from .conftest import budget, check_outcome, files_under, run_cli
from .strategies import HOSTILE, damaged, json_bytes, mutated

onnx = pytest.importorskip("onnx")


def _model(path: Path) -> None:
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(
        np.random.default_rng(0).standard_normal((3, 3, 1, 1)).astype(np.float32), "w"
    )
    node = helper.make_node("Conv", ["image", "w"], ["logits"])
    graph = helper.make_graph(
        [node],
        "segmenter",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 3, "height", "width"])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 3, "height", "width"])],
        [w],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


@pytest.fixture(scope="module")
def deploy_dir(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    from zsplg_fast.export.artifact import files_sha256

    d = tmp_path_factory.mktemp("deploy-fuzz") / "seg"
    d.mkdir()
    _model(d / "model.onnx")
    side = {
        "sidecar_version": 1,
        "kind": "onnx-fp32",
        "precision": "fp32",
        "name": "segmenter.fp32",
        "spec": "segmenter",
        "external_data": None,
        "inputs": [{"name": "image", "dtype": "float32", "shape": ["batch", 3, "height", "width"]}],
        "outputs": [{"name": "logits", "dtype": "float32", "shape": ["batch", 3, "height", "width"]}],
        "opset": 18,
        "versions": {"onnxruntime": "1.32.0", "torch": "2.14.1"},
        "source": {"checkpoint": "random-init"},
        "profiles": {"batch": [1, 1, 8], "height": [16, 64, 1024], "width": [16, 64, 1024]},
        "preprocessing": {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225], "scale": "0..1"},
        "class_names": ["background", "square", "disk"],
        "palette": [[0, 0, 0], [128, 0, 0], [0, 128, 0]],
        "file": "model.onnx",
        "deploy": {"precision": "fp32", "miou": {"mode": "original", "window": 321}},
        "derived_from": {"file": "segmenter.onnx", "validation": {"passed": True, "outputs": []}},
        "sha256": files_sha256([d / "model.onnx"]),
        "size_bytes": (d / "model.onnx").stat().st_size,
    }
    (d / "model.json").write_text(json.dumps(side))
    res = run_cli(["infer", str(d), "--input", str(_image(d.parent)), "--out", str(d.parent / "ok")])
    assert res.code == 0, res.out + res.err  # the untouched folder works
    return d, side


def _image(where: Path) -> Path:
    p = where / "img.png"
    if not p.exists():
        Image.fromarray(np.random.default_rng(1).integers(0, 255, (20, 24, 3), np.uint8)).save(p)
    return p


def _run(deploy: tuple[Path, dict[str, Any]], side: bytes, model: bytes | None) -> None:
    """Copy the folder with ``side`` as model.json (and ``model`` as model.onnx), run infer and inspect."""
    src, _ = deploy
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        d = root / "seg"
        shutil.copytree(src, d)
        (d / "model.json").write_bytes(side)
        if model is not None:
            (d / "model.onnx").write_bytes(model)
        image = _image(root)
        before = files_under(root)
        res = run_cli(["infer", str(d), "--input", str(image), "--out", str(root / "preds")])
        errors = root / "preds" / "errors.jsonl"

        def explain() -> str:
            return (errors.read_text() if errors.exists() else "") + side[:400].decode("utf-8", "replace")

        check_outcome(res, before, files_under(root), "preds", explain=explain)
        if res.code == 0:
            assert (root / "preds" / "labels" / "img.png").is_file()
        before = files_under(root)
        res = run_cli(["inspect", str(d / "model.onnx")])
        check_outcome(
            res, before, files_under(root), None, explain=lambda: side[:400].decode("utf-8", "replace")
        )


VALUES = st.one_of(
    st.sampled_from(HOSTILE),
    st.lists(st.sampled_from([0, 3, 255, 256, -1, "x", None, [1, 2, 3]]), max_size=4),
)


@budget(80)
@given(data=st.data())
@example(data=None)
def test_deploy_sidecar_never_tracebacks(
    deploy_dir: tuple[Path, dict[str, Any]], data: st.DataObject | None
) -> None:
    _, side = deploy_dir
    if data is None:  # explicit examples: no outputs and no class names (was an IndexError in infer);
        _run(deploy_dir, json_bytes({**side, "outputs": [], "class_names": None}), None)
        # 2 class names for 3 logits channels, an input of another rank than the graph's: every image
        # failed with a FeedError (exit 3)
        _run(deploy_dir, json_bytes({**side, "class_names": ["a", "b"]}), None)
        blob = json_bytes({**side, "inputs": [{**side["inputs"][0], "shape": [3, "height", "width"]}]})
    else:
        blob = data.draw(mutated(side, values=VALUES).map(json_bytes).flatmap(damaged))
    _run(deploy_dir, blob, None)


@budget(30)
@given(data=st.data())
@example(data=None)
def test_deploy_model_file_never_tracebacks(
    deploy_dir: tuple[Path, dict[str, Any]], data: st.DataObject | None
) -> None:
    src, side = deploy_dir
    model = (src / "model.onnx").read_bytes()
    if data is None:  # explicit example: tensor names that are not UTF-8 (UnicodeDecodeError, TypeError)
        _run(deploy_dir, json_bytes(side), model.replace(b"\x05image", b"\x05\x80mage"))
        return
    _run(deploy_dir, json_bytes(side), data.draw(damaged(model)))


def test_inspect_prints_sidecar_values_as_text(deploy_dir: tuple[Path, dict[str, Any]]) -> None:
    """A sidecar value that looks like rich markup ('[/]') was parsed as markup: MarkupError traceback."""
    _, side = deploy_dir
    _run(deploy_dir, json_bytes({**side, "kind": "[/]", "spec": "[bold"}), None)
