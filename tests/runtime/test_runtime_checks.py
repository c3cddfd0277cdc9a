"""The fuzz suite's reader fixes, in their runtime home (``zsplg_runtime``): the checks must hold where
``zsplg-runtime`` runs alone (no zsplg_fast, no torch, maybe no onnx), not only through zsplg-fast."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from zsplg_runtime import Segmenter
from zsplg_runtime.errors import LabelFormatError, ModelFileError, SidecarError
from zsplg_runtime.infer import infer
from zsplg_runtime.labels import read_label
from zsplg_runtime.ort import ort_session
from zsplg_runtime.sidecar import read_sidecar


def _edit(d: Path, **fields: Any) -> None:
    side = json.loads((d / "model.json").read_text())
    side.update(fields)
    (d / "model.json").write_text(json.dumps(side))


def test_class_names_that_do_not_match_the_logits_are_refused_before_any_image(
    tiny_deploy: Path, tmp_path: Path
) -> None:
    """2 names for 3 logits channels: every image failed (exit 3); now a SidecarError naming model.json."""
    _edit(tiny_deploy, class_names=["background", "red"], palette=None)
    with pytest.raises(SidecarError, match=r"model\.json.*2 class names.*\[3\] channels"):
        Segmenter.load(tiny_deploy)
    with pytest.raises(SidecarError, match="2 class names"):
        infer(tiny_deploy, tiny_deploy / "img.png", tmp_path / "out")
    assert not (tmp_path / "out" / "labels").exists()


def test_sidecar_io_that_is_not_the_graphs_is_a_sidecar_error(tiny_deploy: Path) -> None:
    """The session's ``_io`` compares the sidecar with the graph (was accepted, then a FeedError each)."""
    _edit(tiny_deploy, inputs=[{"name": "pixels", "dtype": "float32", "shape": ["batch", 3, "h", "w"]}])
    with pytest.raises(SidecarError, match=r"sidecar inputs do not match the model's \(image "):
        Segmenter.load(tiny_deploy)


def test_sidecar_io_in_another_order_or_naming_axes_is_accepted(tiny_deploy: Path) -> None:
    _edit(tiny_deploy, outputs=[{"name": "logits", "dtype": "float32", "shape": ["n", 3, "y", "x"]}])
    seg = Segmenter.load(tiny_deploy)
    assert seg.num_classes == 3 and seg.predict(tiny_deploy / "img.png").shape == (20, 24)


def test_field_types_are_checked_when_the_runtime_reads_a_sidecar(tiny_deploy: Path) -> None:
    _edit(tiny_deploy, outputs=[{"name": "logits", "dtype": "float32", "shape": ["batch", "3", None]}])
    with pytest.raises(SidecarError, match="sidecar field 'outputs'"):
        read_sidecar(tiny_deploy / "model.onnx")


class _FailingOrt:
    """An onnxruntime whose session creation fails as a damaged file or a provider problem does."""

    class InferenceSession:
        def __init__(self, *a: Any, **k: Any) -> None:
            raise RuntimeError("[ONNXRuntimeError] : 1 : FAIL : something went wrong")


def test_ort_session_asks_onnx_checker_and_skips_it_without_onnx(
    tiny_deploy: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bad = tmp_path / "bad.onnx"
    bad.write_bytes((tiny_deploy / "model.onnx").read_bytes()[:-7] + b"\xff" * 7)
    with pytest.raises(ModelFileError, match=r"bad\.onnx.*not a valid ONNX model"):
        ort_session(_FailingOrt, bad, None, [])
    with pytest.raises(RuntimeError, match="FAIL"):  # a good file: a provider problem passes through
        ort_session(_FailingOrt, tiny_deploy / "model.onnx", None, [])
    monkeypatch.setitem(sys.modules, "onnx", None)  # an edge install: import onnx raises ImportError
    with pytest.raises(RuntimeError, match="FAIL"):
        ort_session(_FailingOrt, bad, None, [])


def test_a_decompression_bomb_label_is_a_label_format_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    p = tmp_path / "x.png"
    Image.fromarray(np.zeros((40, 40), np.uint8)).save(p)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # 1600 px > 2 x 100: PIL raises, not warns
    with pytest.raises(LabelFormatError, match=r"x\.png.*decompression bomb"):
        read_label(p)
