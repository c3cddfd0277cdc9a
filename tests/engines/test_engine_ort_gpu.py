"""OrtEngine's GPU paths on CPU: TensorRT-provider settings from the sidecar, its fallback to CUDA with a
clear message, onnxruntime on its own stream ordered against torch's, and zero-copy outputs through
IOBinding (exercised with CPU buffers: the binding code is the same for ``cuda``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from zsplg_fast.engines import ort as ort_backend
from zsplg_fast.errors import ProviderFallbackError

CUDA, TRT, CPU = "CUDAExecutionProvider", "TensorrtExecutionProvider", "CPUExecutionProvider"


class Stream:
    def __init__(self, name: str, log: list[str]) -> None:
        self.name, self.log, self.cuda_stream = name, log, 0xABC

    def wait_stream(self, other: Stream) -> None:
        self.log.append(f"{self.name} waits {other.name}")


@pytest.fixture
def fake_gpu_ort(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """onnxruntime-gpu as seen from Python: lists CUDA/TensorRT; sessions record their providers."""
    import onnxruntime

    state: dict[str, Any] = {"active": [TRT, CUDA, CPU], "log": []}
    real = onnxruntime.InferenceSession

    class Session(real):  # type: ignore[misc, valid-type]
        def __init__(self, path: str, opts: Any, providers: list[tuple[str, dict[str, Any]]]) -> None:
            state["providers"] = providers
            super().__init__(path, opts, providers=["CPUExecutionProvider"])

        def get_providers(self) -> list[str]:
            return list(state["active"])

    monkeypatch.setattr(onnxruntime, "get_available_providers", lambda: [TRT, CUDA, CPU])
    monkeypatch.setattr(onnxruntime, "InferenceSession", Session)
    monkeypatch.setattr(ort_backend, "_torch_stream", lambda idx: Stream("ort", state["log"]))
    monkeypatch.setattr(ort_backend, "_current_stream", lambda idx: Stream("torch", state["log"]))
    return state


def test_tensorrt_provider_settings_come_from_the_spec(
    decoder_onnx: Path, fake_gpu_ort: dict[str, Any], tmp_path: Path
) -> None:
    e = ort_backend.OrtEngine(
        decoder_onnx, providers=["tensorrt"], cache_dir=tmp_path / "engines", device_id=1
    )
    names = [p for p, _ in fake_gpu_ort["providers"]]
    assert names == [TRT, CUDA] and e.device == "cuda:1" and e.fallback is None
    trt, cuda = (o for _, o in fake_gpu_ort["providers"])
    cache = tmp_path / "engines" / "ort_trt" / decoder_onnx.stem
    assert trt["trt_engine_cache_enable"] and trt["trt_timing_cache_enable"] and cache.is_dir()
    assert trt["trt_engine_cache_path"] == trt["trt_timing_cache_path"] == str(cache)
    # profile from the sam_decoder_batched spec: batch 1:256:256, num_points 1:1:4; embeddings fixed
    assert trt["trt_profile_min_shapes"] == "image_embeddings:1x128x16x16,point_coords:1x1x2,point_labels:1x1"
    assert (
        trt["trt_profile_opt_shapes"]
        == "image_embeddings:1x128x16x16,point_coords:256x1x2,point_labels:256x1"
    )
    assert (
        trt["trt_profile_max_shapes"]
        == "image_embeddings:1x128x16x16,point_coords:256x4x2,point_labels:256x4"
    )
    assert trt["user_compute_stream"] == cuda["user_compute_stream"] == str(0xABC)
    assert trt["device_id"] == cuda["device_id"] == 1 and trt["trt_fp16_enable"] is False
    assert e.profiles["point_coords"] == ((1, 1, 2), (256, 1, 2), (256, 4, 2))  # the labeler caps there


def test_tensorrt_provider_not_active_falls_back_to_cuda_with_the_reason(
    decoder_onnx: Path, fake_gpu_ort: dict[str, Any], tmp_path: Path
) -> None:
    fake_gpu_ort["active"] = [CUDA, CPU]  # TensorRT missing, or not the major the wheel was built for
    with pytest.warns(RuntimeWarning, match="TensorRT 11 from 1.27") as rec:
        e = ort_backend.OrtEngine(decoder_onnx, providers=["tensorrt", "cuda"], cache_dir=tmp_path)
    assert (
        e.fallback == str(rec[0].message) and "zsplg-fast build" in e.fallback and e.providers == [CUDA, CPU]
    )
    assert e.profiles == {}  # the CUDA provider takes any batch
    fake_gpu_ort["active"] = [CPU]  # no GPU at all: still a refused silent fallback
    with pytest.raises(ProviderFallbackError):
        ort_backend.OrtEngine(decoder_onnx, providers=["tensorrt"], cache_dir=tmp_path)


def _spy(engine: ort_backend.OrtEngine, log: list[str]) -> list[tuple[str, int]]:
    """Record bound output pointers and when the session runs."""
    bound: list[tuple[str, int]] = []
    session, make = engine.session, engine.session.io_binding

    class Binding:
        def __init__(self) -> None:
            self.inner = make()

        def __getattr__(self, k: str) -> Any:
            return getattr(self.inner, k)

        def bind_output(self, name: str, *args: Any) -> None:
            if len(args) == 5:
                bound.append((name, args[4]))
            self.inner.bind_output(name, *args)

    class Session:
        def __getattr__(self, k: str) -> Any:
            return getattr(session, k)

        def io_binding(self) -> Binding:
            return Binding()

        def run_with_iobinding(self, b: Binding) -> None:
            log.append("run")
            session.run_with_iobinding(b.inner)

    engine.session = Session()  # type: ignore[assignment]
    return bound


def test_bound_outputs_are_the_torch_buffers_and_streams_are_ordered(
    decoder_onnx: Path, decoder_feeds: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    e = ort_backend.OrtEngine(decoder_onnx)
    want = e(decoder_feeds)
    log: list[str] = []
    e._stream = Stream("ort", log)
    monkeypatch.setattr(ort_backend, "_current_stream", lambda idx: Stream("torch", log))
    bound = _spy(e, log)
    feeds = {k: torch.from_numpy(v) for k, v in decoder_feeds.items()}
    out = e._run_bound(feeds, device="cpu")
    assert log == ["ort waits torch", "run", "torch waits ort"]  # ORT's stream waits for torch's inputs
    assert [n for n, _ in bound] == ["low_res_masks", "iou_predictions"]
    assert all(out[n].data_ptr() == ptr for n, ptr in bound)  # written in place: no copy
    for k, v in want.items():
        np.testing.assert_allclose(out[k].numpy(), v, rtol=1e-5, atol=1e-5)


def test_outputs_of_unknown_shape_are_wrapped_with_dlpack(
    decoder_onnx: Path, decoder_feeds: dict[str, Any]
) -> None:
    e = ort_backend.OrtEngine(decoder_onnx)
    want = e(decoder_feeds)
    spec = e.outputs[0]
    e.outputs[0] = type(spec)(spec.name, spec.dtype, ("masks_count", *spec.shape[1:]))  # not from inputs
    bound = _spy(e, [])
    out = e._run_bound({k: torch.from_numpy(v) for k, v in decoder_feeds.items()}, device="cpu")
    assert [n for n, _ in bound] == ["iou_predictions"] and isinstance(out[spec.name], torch.Tensor)
    np.testing.assert_allclose(out[spec.name].numpy(), want[spec.name], rtol=1e-5, atol=1e-5)


class _OrtValue122:
    """An OrtValue as onnxruntime 1.22 returns it from ``get_outputs()``: no ``__dlpack__``."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def numpy(self) -> np.ndarray:
        return self._inner.numpy()


def test_outputs_of_unknown_shape_without_dlpack_are_copied(
    decoder_onnx: Path, decoder_feeds: dict[str, Any]
) -> None:
    """onnxruntime 1.22 (allowed by the package: onnxruntime>=1.18): its OrtValue has no __dlpack__, and
    ``torch.from_dlpack`` on it raised; the output comes back through the host instead."""
    e = ort_backend.OrtEngine(decoder_onnx)
    want = e(decoder_feeds)
    spec = e.outputs[0]
    e.outputs[0] = type(spec)(spec.name, spec.dtype, ("masks_count", *spec.shape[1:]))  # not from inputs
    _spy(e, [])
    session = e.session

    class Binding122:
        def __init__(self, inner: Any) -> None:
            self.inner = inner

        def __getattr__(self, k: str) -> Any:
            return getattr(self.inner, k)

        def get_outputs(self) -> list[Any]:
            return [_OrtValue122(v) for v in self.inner.get_outputs()]

    class Session122:
        def __getattr__(self, k: str) -> Any:
            return getattr(session, k)

        def io_binding(self) -> Binding122:
            return Binding122(session.io_binding())

        def run_with_iobinding(self, b: Binding122) -> None:
            session.run_with_iobinding(b.inner)

    e.session = Session122()  # type: ignore[assignment]
    assert not hasattr(_OrtValue122(None), "__dlpack__")
    out = e._run_bound({k: torch.from_numpy(v) for k, v in decoder_feeds.items()}, device="cpu")
    assert isinstance(out[spec.name], torch.Tensor) and out[spec.name].device.type == "cpu"
    np.testing.assert_allclose(out[spec.name].numpy(), want[spec.name], rtol=1e-5, atol=1e-5)


def test_arena_limits_come_from_the_label_config(decoder_onnx: Path, fake_gpu_ort: dict[str, Any]) -> None:
    """label.ort_gpu_mem_limit_mb / label.ort_cpu_arena reach the CUDA provider and the session."""
    from zsplg_fast.config import load_config
    from zsplg_fast.labeling.engines import ort_memory_options

    cfg = load_config(overrides={"label.ort_gpu_mem_limit_mb": 3072, "label.ort_cpu_arena": False})
    opts = ort_memory_options(cfg)
    ort_backend.OrtEngine(decoder_onnx, providers=["cuda"], **opts)
    (name, cuda), *_ = fake_gpu_ort["providers"]
    assert name == CUDA and cuda["gpu_mem_limit"] == 3072 << 20
    assert cuda["arena_extend_strategy"] == "kSameAsRequested" and cuda["device_id"] == 0
    cpu = ort_backend.OrtEngine(decoder_onnx, providers=["cpu"], **opts)
    assert cpu.session.get_session_options().enable_cpu_mem_arena is False
    default = ort_memory_options(load_config())
    assert "gpu_mem_limit" not in default["provider_options"]["cuda"]  # no cap unless asked
    assert default["session_options"] == {"enable_cpu_mem_arena": True}
