"""zsplg_runtime without the deploy pipeline: preprocessing bit-exact with torchvision's, predictions equal
to the evaluation path, the CLI's exit codes and output rules, resume, and the TensorRT session reading
the deploy folder's plan sidecar (fakes: no TensorRT or GPU here)."""

from __future__ import annotations

import ctypes
import json
import sys
import types
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from zsplg_runtime import Segmenter
from zsplg_runtime.cli import main
from zsplg_runtime.errors import ConfigError, FeedError, OutputExistsError, SidecarError
from zsplg_runtime.infer import infer
from zsplg_runtime.preprocess import Preprocessing


def _set_mode(d: Path, mode: str, window: int) -> None:
    side = json.loads((d / "model.json").read_text())
    side["deploy"]["miou"] = {"mode": mode, "window": window}
    (d / "model.json").write_text(json.dumps(side))


def test_preprocessing_is_bit_exact_with_torchvision() -> None:
    from zsplg_fast.train import transforms as T

    img = np.random.default_rng(0).integers(0, 256, (33, 47, 3), dtype=np.uint8)
    pre = Preprocessing(T.MEAN, T.STD)
    ours = pre.to_input(img)
    ref = T.normalize(Image.fromarray(img)).unsqueeze(0).numpy()
    assert ours.dtype == np.float32 and ours.shape == (1, 3, 33, 47)
    assert np.array_equal(ours, ref)  # the same bits: the network sees the same input
    with pytest.raises(FeedError, match="uint8"):
        pre.to_input(img.astype(np.float32))


@pytest.mark.parametrize("mode", ["original", "sliding_window"])
def test_predictions_equal_the_evaluation_path(tiny_deploy: Path, mode: str) -> None:
    """Segmenter.predict (numpy) == zsplg-fast's predict_label (torch evaluate.predict on the engine)."""
    from zsplg_fast.bench.segmenter import EngineSegmenter, predict_label
    from zsplg_fast.engines.ort import OrtEngine

    _set_mode(tiny_deploy, mode, 16)
    rng = np.random.default_rng(1)
    seg = Segmenter.load(tiny_deploy)
    ref = EngineSegmenter(OrtEngine(tiny_deploy / "model.onnx"), 3)
    for shape in [(20, 24, 3), (37, 29, 3)]:
        img = rng.integers(0, 256, shape, dtype=np.uint8)
        got = seg.predict(img)
        assert got.shape == shape[:2] and got.dtype == np.uint8
        assert np.array_equal(got, predict_label(ref, img, mode, 16))
    assert seg.class_names == ["background", "red", "green"] and seg.palette.shape == (256, 3)
    assert np.array_equal(
        seg.predict(tiny_deploy / "img.png"), predict_label(ref, _png(tiny_deploy), mode, 16)
    )


def _png(d: Path) -> np.ndarray:
    return np.asarray(Image.open(d / "img.png").convert("RGB"))


def test_sidecar_without_preprocessing_is_refused(tiny_deploy: Path) -> None:
    side = json.loads((tiny_deploy / "model.json").read_text())
    del side["preprocessing"]
    (tiny_deploy / "model.json").write_text(json.dumps(side))
    with pytest.raises(SidecarError, match="preprocessing"):
        Segmenter.load(tiny_deploy)


def _images(root: Path, n: int = 3) -> Path:
    rng = np.random.default_rng(2)
    (root / "sub").mkdir(parents=True)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (18 + i, 21, 3), dtype=np.uint8)).save(
            root / ("sub" if i == 0 else ".") / f"im{i}.png"
        )
    (root / "broken.jpg").write_bytes(b"not a jpeg")
    return root


def test_cli_exit_codes_and_output_rules(
    tiny_deploy: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    images = _images(tmp_path / "images")
    out = tmp_path / "out"

    def run(*args: str) -> int:
        with pytest.raises(SystemExit) as e:
            main(["infer", str(tiny_deploy), *args])
        return int(e.value.code or 0)

    assert run("--input", str(images / "sub"), "--out", str(out)) == 0
    assert (out / "labels" / "im0.png").is_file() and (out / ".zsplg-fast.json").is_file()
    capsys.readouterr()
    assert run("--input", str(images), "--out", str(out)) == 2  # a finished run: --force to redo it
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: OutputExistsError:")
    assert run("--input", str(images), "--out", str(out), "--force", "--overlays") == 3  # one bad image
    errors = [json.loads(x) for x in (out / "errors.jsonl").read_text().splitlines()]
    assert [(e["id"], e["error"]) for e in errors] == [("broken", "InputImageError")]
    assert sorted(p.relative_to(out / "labels").as_posix() for p in (out / "labels").rglob("*.png")) == [
        "im0.png",  # the first run's (ids relative to images/sub), kept
        "im1.png",
        "im2.png",
        "sub/im0.png",
    ]
    assert len(list((out / "overlays").rglob("*.png"))) == 3
    user = tmp_path / "user"
    user.mkdir()
    (user / "notes.txt").write_text("mine")
    capsys.readouterr()
    assert run("--input", str(images), "--out", str(user), "--force") == 2  # never into a user's folder
    assert "not made by `zsplg-fast infer`" in capsys.readouterr().err and sorted(user.iterdir()) == [
        user / "notes.txt"
    ]
    assert run("--input", str(tmp_path / "missing"), "--out", str(tmp_path / "o2")) == 2
    assert run("--input", str(images), "--out", str(tmp_path / "o3"), "--backend", "tflite") == 2
    for debug in (["--debug", "infer"], ["infer", "--debug"]):  # either place: the traceback, not one line
        with pytest.raises(ConfigError):
            main(
                [
                    *debug,
                    str(tiny_deploy),
                    "--input",
                    str(images),
                    "--out",
                    str(tmp_path / "o4"),
                    "--backend",
                    "x",
                ]
            )


def test_a_stopped_run_resumes(tiny_deploy: Path, tmp_path: Path) -> None:
    images = _images(tmp_path / "images")
    out = tmp_path / "out"
    first = infer(tiny_deploy, images, out)
    assert (first["written"], first["failed"], first["resumed"]) == (3, 1, 0)
    before = (out / "labels" / "im1.png").stat().st_mtime_ns
    (out / "report.json").unlink()  # as if killed before the end
    (out / "labels" / "im2.png").unlink()
    second = infer(tiny_deploy, images, out)
    assert (second["written"], second["failed"], second["resumed"]) == (1, 1, 2)
    assert (out / "labels" / "im1.png").stat().st_mtime_ns == before  # not predicted again
    with pytest.raises(OutputExistsError):
        infer(tiny_deploy, images, out)


# ---- TensorRT: the plan trtexec builds on the target, loaded with the deploy folder's sidecar ----------


class _Memory:
    """cuda-python's runtime API over host memory: device pointers are keys of numpy buffers."""

    def __init__(self) -> None:
        self.buffers: dict[int, np.ndarray] = {}
        self.cudaMemcpyKind = types.SimpleNamespace(cudaMemcpyHostToDevice=1, cudaMemcpyDeviceToHost=2)
        self.calls: list[str] = []

    def cudaSetDevice(self, device: int) -> tuple[int]:
        return (0,)

    def cudaGetDeviceProperties(self, device: int) -> tuple[int, Any]:
        return 0, types.SimpleNamespace(name=b"NVIDIA Jetson Orin", major=8, minor=7)

    def cudaStreamCreate(self) -> tuple[int, int]:
        return 0, 7

    def cudaMalloc(self, n: int) -> tuple[int, int]:
        buf = np.zeros(n + 256, np.uint8)
        ptr = buf.ctypes.data + (-buf.ctypes.data % 256)
        self.buffers[ptr] = buf
        return 0, ptr

    def cudaFree(self, ptr: int) -> tuple[int]:
        self.buffers.pop(ptr)
        return (0,)

    def cudaMemcpyAsync(self, dst: int, src: int, n: int, kind: int, stream: int) -> tuple[int]:
        self.calls.append("h2d" if kind == 1 else "d2h")
        ctypes.memmove(dst, src, n)
        return (0,)

    def cudaStreamSynchronize(self, stream: int) -> tuple[int]:
        return (0,)

    def cudaStreamDestroy(self, stream: int) -> tuple[int]:
        self.calls.append("destroy")
        return (0,)


def _fake_trt(conv: tuple[np.ndarray, np.ndarray], seen: dict[str, Any]) -> types.ModuleType:
    """tensorrt whose plan computes the tiny deploy's 1x1 convolution from device memory."""
    w, b = conv
    m = types.ModuleType("tensorrt")
    m.__version__ = "10.3.0"
    m.Logger = type("Logger", (), {"WARNING": 2, "__init__": lambda self, level=2: None})
    for name in ("float32", "float16", "int32", "int64", "int8", "uint8", "bool"):
        setattr(m, name, name)
    m.TensorIOMode = types.SimpleNamespace(INPUT="IN", OUTPUT="OUT")

    class Context:
        def __init__(self) -> None:
            self.shape: tuple[int, ...] = ()
            self.addr: dict[str, int] = {}

        def set_input_shape(self, name: str, shape: tuple[int, ...]) -> bool:
            self.shape = shape
            return True

        def set_tensor_address(self, name: str, ptr: int) -> bool:
            self.addr[name] = ptr
            return ptr % 256 == 0

        def get_tensor_shape(self, name: str) -> tuple[int, ...]:
            return self.shape

        def execute_async_v3(self, stream: int) -> bool:
            n = int(np.prod(self.shape))
            x = np.ctypeslib.as_array((ctypes.c_float * n).from_address(self.addr["image"])).reshape(
                self.shape
            )
            y = np.einsum("oc,bchw->bohw", w[:, :, 0, 0], x) + b[None, :, None, None]
            ctypes.memmove(self.addr["logits"], np.ascontiguousarray(y, np.float32).ctypes.data, 4 * n)
            return True

    class Engine:
        num_io_tensors = 2

        def create_execution_context(self) -> Context:
            return Context()

        def get_tensor_name(self, i: int) -> str:
            return ("image", "logits")[i]

        def get_tensor_mode(self, n: str) -> str:
            return "IN" if n == "image" else "OUT"

        def get_tensor_dtype(self, n: str) -> str:
            return "float32"

    class Runtime:
        def __init__(self, logger: Any) -> None:
            pass

        def deserialize_cuda_engine(self, blob: bytes) -> Engine | None:
            seen["blob"] = blob
            return Engine() if blob == b"PLAN" else None

    m.Runtime = Runtime
    return m


def test_trt_session_loads_the_trtexec_plan_with_the_deploy_sidecar(
    tiny_deploy: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The deploy folder ships ``model.<precision>.json`` (deploy/readme.plan_sidecar) for the plan the
    trtexec line writes; ``Segmenter.load(..., backend="trt")`` opens that plan with it (no torch),
    covers the trtexec profile's sizes, and predicts what onnxruntime predicts."""
    import onnx
    from onnx import numpy_helper

    from zsplg_fast.deploy.readme import plan_file, plan_sidecar, trtexec_command

    side = json.loads((tiny_deploy / "model.json").read_text())
    assert f"--saveEngine={plan_file(side)}" in trtexec_command(side)
    (tiny_deploy / "model.fp32.json").write_text(json.dumps(plan_sidecar(side)))
    with pytest.raises(Exception, match="build it on this device"):
        Segmenter.load(tiny_deploy, backend="trt")  # no plan yet: says how to build it
    (tiny_deploy / plan_file(side)).write_bytes(b"PLAN")
    init = {
        t.name: numpy_helper.to_array(t) for t in onnx.load(str(tiny_deploy / "model.onnx")).graph.initializer
    }
    seen: dict[str, Any] = {}
    memory = _Memory()
    monkeypatch.setitem(sys.modules, "tensorrt", _fake_trt((init["w"], init["b"]), seen))
    monkeypatch.setattr("zsplg_runtime.trt.require_cudart", lambda feature="": memory)
    trt_seg = Segmenter.load(tiny_deploy, backend="trt")
    assert seen["blob"] == b"PLAN" and trt_seg.device == "cuda:0"
    assert trt_seg.sizes == ((1, 3, 16, 16), (1, 3, 64, 64), (4, 3, 128, 128))  # the trtexec shapes
    img = np.random.default_rng(3).integers(0, 256, (40, 30, 3), dtype=np.uint8)
    assert np.array_equal(trt_seg.predict(img), Segmenter.load(tiny_deploy).predict(img))
    assert memory.calls[-2:] == ["h2d", "d2h"]
    with pytest.raises(FeedError, match="profile"):
        trt_seg.predict(np.zeros((200, 30, 3), np.uint8))  # beyond the plan's max height
    trt_seg.engine.close()
    assert memory.buffers == {} and memory.calls[-1] == "destroy"  # device memory given back
    report = infer(tiny_deploy, tiny_deploy / "img.png", tmp_path / "out", backend="trt")
    assert report["written"] == 1 and report["sizes_covered"] == "16x16 to 128x128"
    (tiny_deploy / plan_file(side)).write_bytes(b"OTHER")  # a plan from another TensorRT / GPU
    with pytest.raises(Exception, match="unreadable or foreign plan"):
        Segmenter.load(tiny_deploy, backend="trt")
