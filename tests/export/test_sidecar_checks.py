"""Sidecars are read, not only written: a newer ``sidecar_version`` is refused; a library major-version
difference between the recording and this install is a warning naming both versions."""

from __future__ import annotations

import json
import logging
from importlib import metadata
from pathlib import Path

import pytest

from zsplg_fast.errors import SidecarError
from zsplg_fast.export.artifact import read_sidecar


def _write(tmp_path: Path, name: str, **fields: object) -> Path:
    art = tmp_path / f"{name}.onnx"
    art.write_bytes(b"")
    (tmp_path / f"{name}.json").write_text(json.dumps({"sidecar_version": 1, "name": name, **fields}))
    return art


def test_newer_sidecar_is_refused_with_the_version_read(tmp_path: Path) -> None:
    art = _write(tmp_path, "future", sidecar_version=99)
    with pytest.raises(SidecarError, match=r"sidecar_version 99 is newer .*\(1\)") as err:
        read_sidecar(art)
    assert str(tmp_path / "future.json") in str(err.value)
    with pytest.raises(SidecarError, match="not an integer"):
        read_sidecar(_write(tmp_path, "odd", sidecar_version="2"))


def test_major_version_difference_warns_naming_both(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    torch_now, ort_now = metadata.version("torch"), metadata.version("onnxruntime")
    old = {"torch": "1.13.1", "onnxruntime": "0.9.0", "numpy": "1.0"}
    art = _write(tmp_path, "old", versions=old)
    with caplog.at_level(logging.WARNING, logger="zsplg_fast.export"):
        assert read_sidecar(art)["name"] == "old"
    text = caplog.text
    assert "torch 1.13.1" in text and f"torch {torch_now}" in text
    assert "onnxruntime 0.9.0" in text and f"onnxruntime {ort_now}" in text
    caplog.clear()
    same = _write(tmp_path, "same", versions={"torch": torch_now, "onnxruntime": ort_now})
    with caplog.at_level(logging.WARNING, logger="zsplg_fast.export"):
        read_sidecar(same)
    assert "major versions differ" not in caplog.text


def test_engines_read_the_check(tmp_path: Path) -> None:
    """OrtEngine (label --backend ort, infer, bench) goes through the same check."""
    import torch

    from zsplg_fast.engines import load_engine

    art = tmp_path / "conv.onnx"
    torch.onnx.export(torch.nn.Conv2d(3, 2, 3), (torch.zeros(1, 3, 8, 8),), str(art), dynamo=False)
    (tmp_path / "conv.json").write_text(json.dumps({"sidecar_version": 7, "inputs": [], "outputs": []}))
    with pytest.raises(SidecarError, match="sidecar_version 7"):
        load_engine(art, backend="ort")
