"""load_engine dispatch, the torch/ort backends, onnxruntime provider checks, TensorRT compatibility."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from zsplg_fast.engines import ort as ort_backend
from zsplg_fast.engines.base import Engine, backends, load_engine
from zsplg_fast.engines.torch_engine import TorchEngine
from zsplg_fast.engines.trt import check_compatible
from zsplg_fast.errors import (
    ConfigError,
    EngineIncompatibleError,
    MissingDependencyError,
    ProviderFallbackError,
)
from zsplg_fast.export.artifact import read_sidecar
from zsplg_fast.export.trt_info import RuntimeInfo
from zsplg_fast.utils.io import atomic_write_json

H200 = RuntimeInfo("10.9.0", "NVIDIA H200", "9.0")


def test_registry_and_suffix_dispatch(decoder_onnx: Path) -> None:
    assert {"torch", "ort", "trt"} <= set(backends())
    engine = load_engine(decoder_onnx)
    assert isinstance(engine, Engine) and engine.backend == "ort" and engine.device == "cpu"
    assert load_engine(decoder_onnx, backend="onnxruntime").backend == "ort"
    with pytest.raises(ConfigError, match=r"valid: .*ort"):
        load_engine(decoder_onnx, backend="trt")
    with pytest.raises(ConfigError, match="unknown backend"):
        load_engine(decoder_onnx, backend="coreml")
    with pytest.raises(ConfigError, match="no backend opens"):
        load_engine(decoder_onnx.with_suffix(".tflite"))


def test_torch_backend_rebuilds_from_sidecar(decoder_onnx: Path, decoder_feeds: dict[str, Any]) -> None:
    a = load_engine(decoder_onnx)(decoder_feeds)
    t = load_engine(decoder_onnx, backend="torch")
    assert isinstance(t, TorchEngine) and [s.name for s in t.inputs] == [
        s.name for s in load_engine(decoder_onnx).inputs
    ]
    b = t(decoder_feeds)
    for k in a:
        np.testing.assert_allclose(a[k], b[k], atol=1e-4, rtol=1e-4)
    bf16 = load_engine(decoder_onnx, backend="torch", autocast="bf16")(decoder_feeds)
    assert bf16["iou_predictions"].dtype == np.float32
    assert np.corrcoef(bf16["low_res_masks"].ravel(), a["low_res_masks"].ravel())[0, 1] > 0.99


def test_torch_backend_refuses_random_init_and_changed_weights(decoder_onnx: Path, tmp_path: Path) -> None:
    side = read_sidecar(decoder_onnx)
    for name, weights, err in (("random", "random-init", ConfigError), ("changed", "0" * 64, Exception)):
        path = tmp_path / f"{name}.onnx"
        path.write_bytes(decoder_onnx.read_bytes())
        atomic_write_json(
            path.with_suffix(".json"), {**side, "source": {**side["source"], "weights": weights}}
        )
        with pytest.raises(err, match=r"random weights|weights changed"):
            load_engine(path, backend="torch")


def test_ort_missing_gpu_provider_names_the_install(decoder_onnx: Path) -> None:
    with pytest.raises(MissingDependencyError, match="onnxruntime-gpu"):
        load_engine(decoder_onnx, providers=["cuda"])
    with pytest.raises(ConfigError, match="unknown execution provider"):
        load_engine(decoder_onnx, providers=["npu"])


def test_ort_silent_fallback_is_an_error(decoder_onnx: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """onnxruntime-gpu on a machine without a usable GPU lists CUDA but runs on CPU: refuse that."""
    import onnxruntime

    listed = [*onnxruntime.get_available_providers(), "CUDAExecutionProvider"]
    monkeypatch.setattr(onnxruntime, "get_available_providers", lambda: listed)
    with pytest.raises(ProviderFallbackError) as err:
        ort_backend.OrtEngine(decoder_onnx, providers=["cuda", "cpu"])
    assert err.value.asked == "CUDAExecutionProvider" and err.value.got == ["CPUExecutionProvider"]


def test_ort_thread_and_optimisation_options(decoder_onnx: Path, decoder_feeds: dict[str, Any]) -> None:
    e = ort_backend.OrtEngine(decoder_onnx, intra_op_threads=1, inter_op_threads=1, optimization="basic")
    assert e.providers == ["CPUExecutionProvider"] and e(decoder_feeds)["iou_predictions"].shape == (5, 3)
    with pytest.raises(ConfigError, match="optimization"):
        ort_backend.OrtEngine(decoder_onnx, optimization="max")
    e = ort_backend.OrtEngine(decoder_onnx, session_options={"enable_cpu_mem_arena": False})
    assert e.session.get_session_options().enable_cpu_mem_arena is False
    assert e(decoder_feeds)["low_res_masks"].shape == (5, 3, 64, 64)
    with pytest.raises(ConfigError, match="SessionOptions"):
        ort_backend.OrtEngine(decoder_onnx, session_options={"turbo": True})


def _plan_sidecar(**over: Any) -> dict[str, Any]:
    return {
        "tensorrt": "10.9.0",
        "gpu": "NVIDIA H200",
        "compute_capability": "9.0",
        "precision": "fp16",
        "version_compatible": False,
        "rebuild_command": "zsplg-fast build export/sam_encoder.onnx --precision fp16 --out engines --force",
        **over,
    }


@pytest.mark.parametrize(
    ("side", "running", "ok"),
    [
        (_plan_sidecar(), H200, True),
        (_plan_sidecar(), RuntimeInfo("10.10.0", "NVIDIA H200", "9.0"), False),
        (_plan_sidecar(), RuntimeInfo("10.9.0", "NVIDIA A100-SXM4-80GB", "8.0"), False),
        (_plan_sidecar(version_compatible=True), RuntimeInfo("10.10.0", "NVIDIA H200", "9.0"), True),
        (_plan_sidecar(version_compatible=True), RuntimeInfo("10.8.0", "NVIDIA H200", "9.0"), False),
        (_plan_sidecar(version_compatible=True), RuntimeInfo("11.0.0", "NVIDIA H200", "9.0"), False),
        (_plan_sidecar(), RuntimeInfo("10.9.0", "NVIDIA H100", "9.0"), False),
    ],
)
def test_plan_compatibility(side: dict[str, Any], running: RuntimeInfo, ok: bool) -> None:
    if ok:
        check_compatible(side, running, "engines/sam_encoder.fp16.plan")
        return
    with pytest.raises(EngineIncompatibleError) as err:
        check_compatible(side, running, "engines/sam_encoder.fp16.plan")
    msg = str(err.value)
    assert "TensorRT 10.9.0 on NVIDIA H200" in msg and running.tensorrt in msg
    assert "zsplg-fast build export/sam_encoder.onnx --precision fp16" in msg


def test_same_compute_capability_other_gpu_allowed_when_not_strict() -> None:
    check_compatible(_plan_sidecar(), RuntimeInfo("10.9.0", "NVIDIA H100", "9.0"), "x.plan", strict_gpu=False)


@pytest.mark.skipif(importlib.util.find_spec("tensorrt") is not None, reason="tensorrt is installed here")
def test_trt_backend_without_tensorrt(tmp_path: Path) -> None:
    plan = tmp_path / "sam_encoder.fp16.plan"
    plan.write_bytes(b"PLAN")
    atomic_write_json(plan.with_suffix(".json"), {**_plan_sidecar(), "inputs": [], "outputs": []})
    with pytest.raises(MissingDependencyError, match="tensorrt"):
        load_engine(plan)
    assert "tensorrt" in (backends()["trt"].available() or "")


def test_ort_cpu_level_capped_by_the_sidecar(decoder_onnx: Path, tmp_path: Path) -> None:
    """A precision sidecar's ``onnxruntime_cpu_optimization`` caps the CPU session's level (fp16 ViTs crash
    onnxruntime CPU at "all"); a lower level asked for is kept."""
    import shutil

    onnx = tmp_path / "m.fp16.onnx"
    shutil.copy(decoder_onnx, onnx)
    side = json.loads(decoder_onnx.with_suffix(".json").read_text())
    onnx.with_suffix(".json").write_text(json.dumps({**side, "onnxruntime_cpu_optimization": "extended"}))
    e = ort_backend.OrtEngine(onnx)
    level = e.session.get_session_options().graph_optimization_level
    assert (
        e.optimization == "extended"
        and level == ort_backend._ort().GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    )
    assert ort_backend.OrtEngine(onnx, optimization="basic").optimization == "basic"
    assert ort_backend.OrtEngine(decoder_onnx).optimization == "all"
