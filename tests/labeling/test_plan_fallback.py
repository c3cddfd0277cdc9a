"""TensorRT plans built for another GPU (a mixed Ray cluster), with a fake TensorRT: each plan is rebuilt
here from its ONNX into a per-GPU folder; without the ONNX the worker labels on torch with one warning
line. The job never fails for it."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest
import torch

from zsplg_fast.config import load_config
from zsplg_fast.errors import EngineIncompatibleError
from zsplg_fast.export.artifact import Artifact
from zsplg_fast.export.trt_info import RuntimeInfo
from zsplg_fast.labeling import plan_fallback
from zsplg_fast.labeling.engines import label_engines

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")  # random tiny SAM
NAMES = ("sam_encoder", "sam_decoder_batched", "clip_dense")
WEIGHTS = {"sam": "s" * 64, "clip": "c" * 64}
H100 = RuntimeInfo("10.16.1.11", "NVIDIA H100 80GB HBM3", "9.0")


class FakePlan:
    def __init__(self, path: Path) -> None:
        self.path, self.device, self.inputs, self.outputs = path, "cuda:0", [], []


def _plans(root: Path, with_onnx: bool) -> Path:
    engines = root / "engines"
    engines.mkdir(parents=True)
    for n in NAMES:
        family = "clip" if n == "clip_dense" else "sam"
        side = {
            "kind": "tensorrt",
            "name": n,
            "precision": "fp32",
            "tensorrt": "10.3.0",
            "gpu": "NVIDIA A100-SXM4-80GB",
            "compute_capability": "8.0",
            "onnx": {"path": f"export/{n}.onnx"},  # as `build` records it: relative to where it ran
            "source": {"weights": WEIGHTS[family]},
            **(
                {"profiles": {"point_coords": [[1, 1, 2], [256, 1, 2], [256, 4, 2]]}}
                if "decoder" in n
                else {}
            ),
        }
        (engines / f"{n}.fp32.plan").write_bytes(b"plan")
        (engines / f"{n}.fp32.json").write_text(json.dumps(side))
        if with_onnx:
            (root / "export").mkdir(exist_ok=True)
            (root / "export" / f"{n}.onnx").write_bytes(b"onnx")
    return engines


def _fake_trt(monkeypatch: pytest.MonkeyPatch, build: Any) -> list[Path]:
    """load_engine refuses every plan outside a ``rebuilt`` folder, as TrtEngine refuses an A100 plan."""
    import zsplg_fast.export.tensorrt as trt_build
    import zsplg_fast.export.trt_info as trt_info

    loaded: list[Path] = []

    def load_engine(path: Path, backend: str | None = None, **kw: Any) -> Any:
        if "rebuilt" not in Path(path).parts:
            raise EngineIncompatibleError(
                path, "TensorRT 10.3.0 on an A100 (8.0)", H100.describe(), "rebuild"
            )
        loaded.append(Path(path))
        return FakePlan(Path(path))

    monkeypatch.setattr(plan_fallback, "load_engine", load_engine)
    monkeypatch.setattr(trt_info, "runtime_info", lambda device=0: H100)
    monkeypatch.setattr(trt_build, "build_engine", build)
    return loaded


def _cfg(engines: Path) -> Any:
    over = {
        "label.backend": "trt",
        "label.precision": "fp32",
        "label.engines": str(engines),
        "sam.variant": "tiny",
    }
    return load_config(None, over)


def test_a_plan_for_another_gpu_is_rebuilt_here_from_its_onnx(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    engines = _plans(tmp_path, with_onnx=True)
    builds: list[dict[str, Any]] = []

    def build(onnx: Path, out: Path, **kw: Any) -> tuple[Artifact, bool]:
        builds.append({"onnx": Path(onnx), "out": Path(out), **kw})
        return Artifact(Path(out) / f"{Path(onnx).stem}.fp32.plan", {}), False

    loaded = _fake_trt(monkeypatch, build)
    got = label_engines(_cfg(engines), None, None, WEIGHTS, torch.device("cpu"))
    here = engines / "rebuilt" / "NVIDIA-H100-80GB-HBM3-cc9.0-trt10.16.1.11"
    assert [b["onnx"] for b in builds] == [tmp_path / "export" / f"{n}.onnx" for n in NAMES]
    assert {b["out"] for b in builds} == {here} and {b["precision"] for b in builds} == {"fp32"}
    assert [b["decoder_max_batch"] for b in builds] == [None, 256, None]  # the plan's prompt max kept
    assert loaded == [here / f"{n}.fp32.plan" for n in NAMES]
    assert got.encoder.path == here / "sam_encoder.fp32.plan" and got.describe["backend"] == "trt"


def test_without_its_onnx_the_worker_labels_on_torch_with_one_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from zsplg_fast.models import build_sam

    engines = _plans(tmp_path, with_onnx=False)

    def build(*a: Any, **k: Any) -> Any:
        raise AssertionError("nothing to rebuild from")

    _fake_trt(monkeypatch, build)

    class Models:  # what build.Models gives: modules built on first use
        sam = build_sam("tiny")
        dense = torch.nn.Identity()

    with caplog.at_level(logging.WARNING):
        got = label_engines(_cfg(engines), None, None, WEIGHTS, torch.device("cpu"), models=Models())
    assert got.describe["backend"] == "torch" and got.describe["fallback_from"] == "trt"
    assert "ONNX is not here" in got.describe["fallback_reason"]
    warned = [r.getMessage() for r in caplog.records if r.name.startswith("zsplg_fast.labeling")]
    assert len(warned) == 1 and "\n" not in warned[0] and "labeling on torch instead" in warned[0]
    emb = got.encoder({"image": torch.zeros(1, 3, 256, 256)})["image_embeddings"]
    assert tuple(emb.shape) == (1, 128, 16, 16)  # the tiny SAM's encoder runs


def test_fallback_choice(tmp_path: Path) -> None:
    engines = _plans(tmp_path, with_onnx=True)
    assert plan_fallback.fallback_backend("fp32", engines) == ("ort", tmp_path / "export")
    assert plan_fallback.fallback_backend("fp16", engines) == ("torch", None)  # onnxruntime: fp32, int8
    assert plan_fallback.fallback_backend("int8", engines) is None  # no int8 ONNX, and torch has no int8


def test_fallback_choice_uses_the_proposer_familys_onnx_names(tmp_path: Path) -> None:
    """SAM 2 plans fall back to onnxruntime on sam2_encoder / sam2_decoder_batched, not SAM's names; a
    shared SAM decoder counts only with both of its files."""
    from zsplg_fast.labeling.engines import FAMILY_ARTIFACTS

    export, engines = tmp_path / "export", tmp_path / "engines"
    export.mkdir()
    engines.mkdir()
    for n in ("sam_encoder", "clip_dense", "sam_decoder_shared", "sam2_encoder"):
        (export / f"{n}.onnx").write_bytes(b"x")
    sam2 = FAMILY_ARTIFACTS["sam2"]
    assert plan_fallback.fallback_backend("fp32", engines, sam2.encoder, sam2.decoders) == ("torch", None)
    assert plan_fallback.fallback_backend("fp32", engines) == ("torch", None)  # sam_decoder_image missing
    (export / "sam2_decoder_batched.onnx").write_bytes(b"x")
    (export / "sam_decoder_image.onnx").write_bytes(b"x")
    assert plan_fallback.fallback_backend("fp32", engines, sam2.encoder, sam2.decoders) == ("ort", export)
    assert plan_fallback.fallback_backend("fp32", engines) == ("ort", export)
