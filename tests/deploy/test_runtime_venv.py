"""The edge runtime on its own: a venv with only ``pip install ./runtime`` (``make runtime-venv`` builds
``.venv-runtime``; ``make test`` does it first) has no torch, and its ``zsplg-runtime infer`` writes the
same label PNGs as ``zsplg-fast infer`` on the toy segmenter deployed at fp32, fp16 and int8.

Outside CI the venv may be absent (the tests skip, saying how to build it); under ``CI=true`` its
absence is a failure.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]
RVENV = Path(os.environ.get("ZSPLG_RUNTIME_VENV", ROOT / ".venv-runtime"))


def _venv_bin(name: str) -> Path:
    exe = RVENV / "bin" / name
    if not exe.exists():
        why = f"{RVENV} has no {name}: `make runtime-venv` builds it (pip install ./runtime)"
        if os.environ.get("CI") == "true":
            pytest.fail(f"under CI the runtime venv is required; {why}")
        pytest.skip(why)
    return exe


def _run(*cmd: str | Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}  # the venv alone
    return subprocess.run([str(c) for c in cmd], capture_output=True, text=True, env=env, timeout=300)


def test_the_runtime_venv_has_no_torch() -> None:
    py = _venv_bin("python")
    r = _run(py, "-c", "import torch")
    assert r.returncode != 0 and "No module named 'torch'" in r.stderr
    r = _run(py, "-m", "pip", "list", "--format=freeze")
    installed = {line.split("==")[0].lower() for line in r.stdout.splitlines()}
    assert "zsplg-fast-runtime" in installed and {"numpy", "pillow", "onnxruntime"} <= installed
    assert not installed & {"torch", "torchvision", "segment-anything", "open-clip-torch", "zsplg-fast"}
    r = _run(py, "-c", "import zsplg_runtime, sys; print(zsplg_runtime.__file__)")
    assert r.returncode == 0 and str(RVENV) in r.stdout  # the installed copy, not this checkout's


@pytest.fixture(scope="module")
def deploys(
    int8_deploy: tuple[Path, dict],
    deploy_config: Callable[..., Any],
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[str, Path]:
    """The toy segmenter deployed at fp32, fp16 (ModelOpt AutoCast) and int8 (static QDQ)."""
    from zsplg_fast.deploy import deploy

    root = tmp_path_factory.mktemp("deploys")
    out = {"int8": int8_deploy[0]}
    for precision in ("fp32", "fp16"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            deploy(deploy_config(root / precision, precision=precision, max_miou_drop=5.0))
        out[precision] = root / precision
    return out


@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_zsplg_runtime_infer_equals_zsplg_fast_infer(
    precision: str, deploys: dict[str, Path], shapes_ds: Path, tmp_path: Path
) -> None:
    from zsplg_fast.deploy import infer

    exe = _venv_bin("zsplg-runtime")
    images = tmp_path / "images"
    images.mkdir()
    for p in sorted((shapes_ds / "JPEGImages").glob("val_*.jpg"))[:6]:
        shutil.copy(p, images / p.name)
    (images / "broken.jpg").write_bytes(b"")
    d = deploys[precision]
    r = _run(exe, "infer", d, "--input", images, "--out", tmp_path / "edge", "--overlays")
    assert r.returncode == 3, r.stderr  # 6 written, the empty file recorded: exit 3 as zsplg-fast's
    report = infer(d, images, tmp_path / "full", overlays=True)
    assert report["written"] == 6 and report["failed"] == 1
    classes: set[int] = set()
    for name in sorted(p.name for p in (tmp_path / "full" / "labels").glob("*.png")):
        a = Image.open(tmp_path / "edge" / "labels" / name)
        b = Image.open(tmp_path / "full" / "labels" / name)
        assert a.mode == b.mode == "P" and a.getpalette() == b.getpalette()
        assert np.array_equal(np.asarray(a), np.asarray(b)), f"{precision} {name}"
        classes |= set(np.unique(np.asarray(b)).tolist())
    assert len(classes) >= 2  # real predictions (background and shapes), not one constant map
    assert len(list((tmp_path / "edge" / "overlays").glob("*.png"))) == 6
    assert (tmp_path / "edge" / "errors.jsonl").read_text().count("InputImageError") == 1
