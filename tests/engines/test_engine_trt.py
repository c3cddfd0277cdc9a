"""TrtEngine runtime checks on CPU: profile bounds, the booleans of set_input_shape / set_tensor_address,
256-byte aligned addresses, and deserialisation on the requested device (a recording fake ``tensorrt``
module and fake CUDA device context; TensorRT and a GPU cannot be used here)."""

from __future__ import annotations

import contextlib
import sys
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from zsplg_fast.engines import trt as trt_engine
from zsplg_fast.errors import FeedError
from zsplg_fast.export.trt_info import RuntimeInfo
from zsplg_fast.utils.io import atomic_write_json

H200 = RuntimeInfo("10.9.0", "NVIDIA H200", "9.0")
PROFILE = ((1, 1, 2), (64, 1, 2), (256, 4, 2))  # point_coords: batch 1..256, num_points 1..4


class Context:
    """Records calls; answers False where ``refuse`` says so."""

    def __init__(self, refuse: str = "") -> None:
        self.refuse, self.calls = refuse, []

    def set_input_shape(self, name: str, shape: tuple[int, ...]) -> bool:
        self.calls.append(("shape", name, shape))
        return self.refuse != "shape"

    def set_tensor_address(self, name: str, ptr: int) -> bool:
        self.calls.append(("address", name, ptr))
        return self.refuse != "address"


def test_shape_outside_the_profile_names_tensor_shape_and_bounds() -> None:
    ctx = Context()
    with pytest.raises(FeedError) as err:
        trt_engine.bind_input(ctx, "point_coords", torch.zeros(1024, 1, 2), PROFILE)
    msg = str(err.value)
    assert "'point_coords'" in msg and "[1024, 1, 2]" in msg
    assert "min [1, 1, 2]" in msg and "opt [64, 1, 2]" in msg and "max [256, 4, 2]" in msg
    assert ctx.calls == []  # refused before TensorRT sees it
    trt_engine.check_profile("point_coords", (256, 4, 2), PROFILE)  # the max itself is inside
    with pytest.raises(FeedError):
        trt_engine.check_profile("point_coords", (8, 1), PROFILE)  # wrong rank


def test_false_from_set_input_shape_or_set_tensor_address_raises() -> None:
    x = torch.zeros(8, 1, 2)
    with pytest.raises(FeedError, match="set_input_shape returned False"):
        trt_engine.bind_input(Context("shape"), "point_coords", x, None)
    with pytest.raises(FeedError, match="256-byte aligned"):
        trt_engine.bind_input(Context("address"), "point_coords", x, PROFILE)
    ctx = Context()
    kept = trt_engine.bind_input(ctx, "point_coords", x, PROFILE)
    assert ctx.calls == [("shape", "point_coords", (8, 1, 2)), ("address", "point_coords", kept.data_ptr())]


def test_misaligned_views_are_copied_to_aligned_buffers() -> None:
    base = torch.arange(1000, dtype=torch.float32)
    view = base[1:65].view(8, 8)  # 4 bytes past an allocation: never 256-byte aligned
    assert view.data_ptr() % 256 != 0
    ctx = Context()
    kept = trt_engine.bind_input(ctx, "x", view, None)
    assert kept.data_ptr() % 256 == 0 and torch.equal(kept, view) and ctx.calls[1][2] == kept.data_ptr()
    strided = base[:128].view(8, 16)[:, ::2]  # non-contiguous
    assert trt_engine.aligned(strided).data_ptr() % 256 == 0 and torch.equal(
        trt_engine.aligned(strided), strided
    )
    ok = trt_engine.aligned(view)
    assert trt_engine.aligned(ok) is ok  # already aligned: no copy


def test_profile_from_engine_else_sidecar() -> None:
    eng = types.SimpleNamespace(get_tensor_profile_shape=lambda name, i: [list(s) for s in PROFILE])
    assert trt_engine.profile_of(eng, {}, "point_coords") == PROFILE
    side = {"profiles": {"point_coords": [list(s) for s in PROFILE]}}
    assert trt_engine.profile_of(object(), side, "point_coords") == PROFILE
    assert trt_engine.profile_of(object(), {}, "point_coords") is None


# ---- the device index: deserialise and create the context on the requested GPU -----------------------


def _fake_trt(seen: dict[str, Any]) -> types.ModuleType:
    m = types.ModuleType("tensorrt")
    m.__version__ = "10.9.0"
    m.Logger = type("Logger", (), {"WARNING": 2, "__init__": lambda self, level=2: None})
    for name in ("float32", "float16", "bfloat16", "int32", "int64", "int8", "uint8", "bool"):
        setattr(m, name, name)
    m.TensorIOMode = types.SimpleNamespace(INPUT="IN", OUTPUT="OUT")

    class Engine:
        num_io_tensors = 2

        def create_execution_context(self) -> Any:
            seen["context_on"] = seen["current"]
            return Context()

        def get_tensor_name(self, i: int) -> str:
            return ("x", "y")[i]

        def get_tensor_mode(self, n: str) -> str:
            return "IN" if n == "x" else "OUT"

        def get_tensor_dtype(self, n: str) -> str:
            return "float32"

        def get_tensor_profile_shape(self, n: str, i: int) -> list[list[int]]:
            return [[1, 4], [2, 4], [8, 4]]

    class Runtime:
        def __init__(self, logger: Any) -> None:
            seen["runtime_on"] = seen["current"]

        def deserialize_cuda_engine(self, blob: bytes) -> Engine:
            seen["deserialised_on"] = seen["current"]
            return Engine()

    m.Runtime = Runtime
    return m


def test_plan_is_deserialised_on_the_requested_device(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: dict[str, Any] = {"current": 0}

    @contextlib.contextmanager
    def device(idx: Any) -> Iterator[None]:
        before, seen["current"] = seen["current"], int(str(idx).split(":")[-1])
        try:
            yield
        finally:
            seen["current"] = before

    monkeypatch.setitem(sys.modules, "tensorrt", _fake_trt(seen))
    monkeypatch.setattr(trt_engine, "runtime_info", lambda idx: H200)
    monkeypatch.setattr(torch.cuda, "device", device)
    monkeypatch.setattr(torch.cuda, "Stream", lambda device: types.SimpleNamespace(device=device))
    plan = tmp_path / "m.fp32.plan"
    plan.write_bytes(b"PLAN")
    side = {
        "tensorrt": "10.9.0",
        "gpu": "NVIDIA H200",
        "compute_capability": "9.0",
        "inputs": [{"name": "x", "dtype": "float32", "shape": ["batch", 4]}],
        "outputs": [{"name": "y", "dtype": "float32", "shape": ["batch", 4]}],
    }
    atomic_write_json(plan.with_suffix(".json"), side)
    engine = trt_engine.TrtEngine(plan, device=3)
    assert seen["runtime_on"] == seen["deserialised_on"] == seen["context_on"] == 3 and seen["current"] == 0
    assert engine.device == "cuda:3" and engine.stream.device == "cuda:3"
    assert engine.profiles == {"x": ((1, 4), (2, 4), (8, 4))}


def test_a_call_orders_streams_without_a_host_sync(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """execute_async_v3 on the engine's stream after it waits for torch's; torch's then waits for it; the
    bound tensors are recorded on the engine's stream (kept by the allocator) and nothing synchronises
    the host (was one ``stream.synchronize()`` per call). Fake streams, tensors on the CPU."""
    log: list[str] = []

    class FakeStream:
        def __init__(self, name: str) -> None:
            self.name, self.cuda_stream = name, 7

        def wait_stream(self, other: FakeStream) -> None:
            log.append(f"{self.name} waits {other.name}")

        def synchronize(self) -> None:
            log.append(f"host waits {self.name}")

    test_plan_is_deserialised_on_the_requested_device(tmp_path, monkeypatch)  # a TrtEngine on the fakes
    engine = trt_engine.TrtEngine(tmp_path / "m.fp32.plan", device=3)
    ctx = engine.context
    ctx.get_tensor_shape = lambda name: (2, 4)
    ctx.execute_async_v3 = lambda handle: log.append(f"execute on {handle}") or True
    engine.device, engine.stream = "cpu", FakeStream("trt")
    torch_stream = FakeStream("torch")
    monkeypatch.setattr(torch.cuda, "current_stream", lambda device=None: torch_stream)
    monkeypatch.setattr(torch.cuda, "device", lambda idx: contextlib.nullcontext())
    monkeypatch.setattr(
        torch.Tensor, "record_stream", lambda self, s: log.append(f"record {tuple(self.shape)} on {s.name}")
    )
    out = engine({"x": torch.ones(2, 4)})
    assert log == [
        "trt waits torch",
        "execute on 7",
        "record (2, 4) on trt",  # the input
        "record (2, 4) on trt",  # the output
        "torch waits trt",
    ]
    assert out["y"].shape == (2, 4)
