"""Strongly typed TensorRT builds: the precision is the ONNX graph's (checked against its sidecar, made by
precision_artifact when the CLI is given an fp32 export), network flags per line, no precision builder
flags, TF32 cleared for fp32, foreign timing caches, the decoder batch setting; checked against a
recording fake ``tensorrt`` module that has only the names both TensorRT 10 and 11 have."""

from __future__ import annotations

import shutil
import sys
import types
from pathlib import Path
from typing import Any

import pytest

from zsplg_fast.errors import ConfigError, ExportFailedError, OutputExistsError
from zsplg_fast.export import tensorrt as trt_build
from zsplg_fast.export.artifact import read_sidecar, sidecar_path
from zsplg_fast.export.tensors import AxisRange
from zsplg_fast.export.trt_info import RuntimeInfo
from zsplg_fast.utils.io import atomic_write_json

H200 = RuntimeInfo("10.9.0", "NVIDIA H200", "9.0")


def _as_precision(src: Path, dst_dir: Path, precision: str) -> Path:
    """A copy of ``src`` declared as a ``precision`` ONNX (what precision_artifact writes beside it)."""
    src = Path(src)
    dst = dst_dir / f"{src.stem}.{precision}.onnx"
    shutil.copyfile(src, dst)
    side = {
        **read_sidecar(src),
        "name": f"{src.stem}.{precision}",
        "precision": precision,
        "precision_tool": "fake-tool",
        "precision_tool_version": "0.1",
    }
    atomic_write_json(sidecar_path(dst), side)
    return dst


def test_int8_needs_explicit_qdq(exported: dict[str, Any], tmp_path: Path) -> None:
    int8 = _as_precision(exported["segmenter"].path, tmp_path, "int8")
    with pytest.raises(ConfigError, match="QuantizeLinear"):
        trt_build.build_engine(int8, tmp_path, precision="int8")


def test_precision_must_be_the_graphs(exported: dict[str, Any], tmp_path: Path) -> None:
    """Strongly typed builds: asking fp16 of an fp32 ONNX says how to make the fp16 ONNX."""
    src = Path(exported["segmenter"].path)
    with pytest.raises(ConfigError) as err:
        trt_build.build_engine(src, tmp_path, precision="fp16")
    msg = str(err.value)
    assert "fp32 ONNX" in msg and f"zsplg-fast build {src} --precision fp16" in msg
    fp16 = _as_precision(src, tmp_path, "fp16")
    with pytest.raises(ConfigError, match="is a fp16 ONNX"):
        trt_build.build_engine(fp16, tmp_path, precision="bf16")
    with pytest.raises(ConfigError, match="unknown precision"):
        trt_build.build_engine(src, tmp_path, precision="fp8")


def test_precision_onnx_reuses_or_makes_the_precision_artifact(
    exported: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from zsplg_fast.export import precision as precision_mod
    from zsplg_fast.export.artifact import Artifact

    src = Path(exported["segmenter"].path)
    fp16 = _as_precision(src, tmp_path, "fp16")
    calls: list[tuple[Path, str, Any]] = []

    def fake(
        onnx_path: Path, precision: str, *, calibration: Any = None, force: bool = False, **_: Any
    ) -> Artifact:
        calls.append((Path(onnx_path), precision, calibration))
        return Artifact.open(fp16)

    monkeypatch.setattr(precision_mod, "precision_artifact", fake, raising=False)
    assert trt_build.precision_onnx(src, "fp32") == src and not calls
    assert trt_build.precision_onnx(fp16, "fp16") == fp16 and not calls
    assert trt_build.precision_onnx(src, "fp16") == fp16 and calls == [(src, "fp16", None)]
    with pytest.raises(ConfigError, match="is a fp16 ONNX"):
        trt_build.precision_onnx(fp16, "int8")


def test_network_flags_by_line() -> None:
    flag = types.SimpleNamespace(STRONGLY_TYPED=1)
    for version, want in (("10.3.0", 2), ("10.16.1.11", 2), ("11.4.0.106", 0)):
        fake = types.SimpleNamespace(__version__=version, NetworkDefinitionCreationFlag=flag)
        assert trt_build.network_flags(fake) == want


# ---- a recording fake of the TensorRT 10 Python API ------------------------------------------------------


class _Err:
    def __init__(self, i: int) -> None:
        self.i = i

    def code(self) -> str:
        return "UNSUPPORTED_NODE"

    def node(self) -> int:
        return self.i

    def desc(self) -> str:
        return f"no importer for op #{self.i}"


def _fake_trt(state: dict[str, Any]) -> types.ModuleType:
    m = types.ModuleType("tensorrt")
    m.__version__ = "10.9.0"
    m.Logger = type("Logger", (), {"WARNING": 2, "__init__": lambda self, level=2: None})
    # only what both lines have: no FP16/BF16/INT8 flags, no precision constraints (removed in 11)
    m.BuilderFlag = types.SimpleNamespace(TF32="TF32", VERSION_COMPATIBLE="VERSION_COMPATIBLE")
    m.NetworkDefinitionCreationFlag = types.SimpleNamespace(STRONGLY_TYPED=1)
    m.MemoryPoolType = types.SimpleNamespace(WORKSPACE="WORKSPACE")

    class Network:
        pass

    class Cache:
        def __init__(self, blob: bytes) -> None:
            self.blob = blob
            state.setdefault("cache_blobs", []).append(blob)

        def serialize(self) -> bytes:
            return self.blob + b"+"

    class Config:
        def __init__(self) -> None:
            self.flags: list[str] = []
            self.cleared: list[str] = []
            self.pools: dict[str, int] = {}
            self.profiles: list[Any] = []
            self.cache: Cache | None = None
            self.builder_optimization_level = None

        def set_flag(self, f: str) -> None:
            self.flags.append(f)

        def clear_flag(self, f: str) -> None:
            self.cleared.append(f)

        def set_memory_pool_limit(self, pool: str, n: int) -> None:
            self.pools[pool] = n

        def add_optimization_profile(self, p: Any) -> None:
            self.profiles.append(p)

        def create_timing_cache(self, blob: bytes) -> Cache:
            return Cache(blob)

        def set_timing_cache(self, cache: Cache, ignore_mismatch: bool) -> bool:
            if cache.blob.startswith(b"FOREIGN"):  # TensorRT refuses a cache from another TRT / GPU
                return False
            self.cache = cache
            return True

        def get_timing_cache(self) -> Cache | None:
            return self.cache

    class Profile:
        def __init__(self) -> None:
            self.shapes: dict[str, tuple] = {}

        def set_shape(self, name: str, lo: tuple, opt: tuple, hi: tuple) -> None:
            self.shapes[name] = (lo, opt, hi)

    class Builder:
        def __init__(self, logger: Any) -> None:
            state["builders"] = state.get("builders", 0) + 1

        def create_network(self, flags: int) -> Network:
            state["network_flags"] = flags
            state["network"] = Network()
            return state["network"]

        def create_builder_config(self) -> Config:
            state["config"] = Config()
            return state["config"]

        def create_optimization_profile(self) -> Profile:
            return Profile()

        def build_serialized_network(self, network: Network, config: Config) -> bytes | None:
            state["cache_at_build"] = config.cache.blob if config.cache else None
            return state.get("plan", b"PLAN")

    class OnnxParser:
        def __init__(self, network: Network, logger: Any) -> None:
            self.num_errors = 0

        def parse_from_file(self, path: str) -> bool:
            state["parsed"] = path
            self.num_errors = state.get("parser_errors", 0)
            return self.num_errors == 0

        def get_error(self, i: int) -> _Err:
            return _Err(i)

    m.Builder, m.OnnxParser = Builder, OnnxParser
    return m


@pytest.fixture
def fake_trt(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    state: dict[str, Any] = {}
    monkeypatch.setitem(sys.modules, "tensorrt", _fake_trt(state))
    monkeypatch.setattr(trt_build, "runtime_info", lambda: H200)
    return state


def test_fp16_build_call_sequence_and_sidecar(
    fake_trt: dict[str, Any], exported: dict[str, Any], tmp_path: Path
) -> None:
    onnx_path = _as_precision(exported["segmenter"].path, tmp_path, "fp16")
    cache = tmp_path / "timing.cache"
    art, reused = trt_build.build_engine(
        onnx_path, tmp_path / "engines", precision="fp16", timing_cache=cache
    )
    assert not reused and art.path == tmp_path / "engines" / "segmenter.fp16.plan"
    assert art.path.read_bytes() == b"PLAN" and cache.read_bytes() == b"+"
    cfg = fake_trt["config"]
    assert fake_trt["network_flags"] == 2 and fake_trt["parsed"] == str(onnx_path)  # 1 << STRONGLY_TYPED
    assert cfg.flags == [] and cfg.cleared == []  # no precision flags; TF32 left on for a non-fp32 plan
    assert cfg.pools["WORKSPACE"] == 4 << 30 and cfg.builder_optimization_level == 3
    assert cfg.profiles[0].shapes == {"image": ((1, 3, 256, 256), (1, 3, 512, 512), (8, 3, 1024, 1024))}
    side = read_sidecar(art.path)
    assert (
        side["tensorrt"] == "10.9.0" and side["gpu"] == "NVIDIA H200" and side["compute_capability"] == "9.0"
    )
    assert side["precision"] == "fp16" and side["strongly_typed"] and side["network_flags"] == 2
    assert side["precision_tool"] == "fake-tool" and side["precision_tool_version"] == "0.1"
    assert side["onnx"]["sha256"] == read_sidecar(onnx_path)["sha256"] and side["onnx"]["precision"] == "fp16"
    assert side["class_names"] == ["background", "circle", "square", "star"]
    assert side["source"] == read_sidecar(onnx_path)["source"] and side["timing_cache"] == "empty"
    assert "zsplg-fast build" in side["rebuild_command"]

    art2, reused = trt_build.build_engine(
        onnx_path, tmp_path / "engines", precision="fp16", timing_cache=cache
    )
    assert reused and fake_trt["builders"] == 1 and art2.sidecar["cache_key"] == side["cache_key"]

    other = {"batch": AxisRange(1, 4, 4)}
    with pytest.raises(OutputExistsError):
        trt_build.build_engine(
            onnx_path, tmp_path / "engines", precision="fp16", profiles=other, timing_cache=cache
        )
    art3, reused = trt_build.build_engine(
        onnx_path,
        tmp_path / "engines",
        precision="fp16",
        profiles=other,
        timing_cache=cache,
        force=True,
        version_compatible=True,
    )
    assert not reused and fake_trt["config"].flags == ["VERSION_COMPATIBLE"]
    assert art3.sidecar["version_compatible"] and art3.sidecar["timing_cache"] == "loaded"
    assert fake_trt["config"].profiles[0].shapes["image"][2] == (4, 3, 1024, 1024)
    assert cache.read_bytes() == b"++"  # the persisted cache was loaded and extended


def test_fp32_plan_clears_tf32_and_11_creates_without_flag(
    fake_trt: dict[str, Any], exported: dict[str, Any], tmp_path: Path
) -> None:
    sys.modules["tensorrt"].__version__ = "11.4.0.106"
    art, _ = trt_build.build_engine(exported["segmenter"].path, tmp_path, precision="fp32", timing_cache=None)
    assert fake_trt["config"].cleared == ["TF32"] and fake_trt["config"].flags == []
    assert fake_trt["network_flags"] == 0 and art.sidecar["network_flags"] == 0
    assert art.sidecar["tf32"] is False and art.sidecar["timing_cache"] == "none"
    assert art.sidecar["precision_tool"].startswith("none") and art.path.name == "segmenter.fp32.plan"


def test_foreign_timing_cache_falls_back_to_empty(
    fake_trt: dict[str, Any], exported: dict[str, Any], tmp_path: Path
) -> None:
    cache = tmp_path / "timing.cache"
    cache.write_bytes(b"FOREIGN-trt-10.3-orin")
    art, _ = trt_build.build_engine(
        exported["segmenter"].path, tmp_path, precision="fp32", timing_cache=cache
    )
    assert fake_trt["cache_blobs"] == [b"FOREIGN-trt-10.3-orin", b""] and fake_trt["cache_at_build"] == b""
    assert art.sidecar["timing_cache"].startswith("foreign: mismatch") and art.path.read_bytes() == b"PLAN"
    assert cache.read_bytes() == b"+"  # replaced by this machine's cache, after the plan was written


def test_every_parser_error_is_surfaced(
    fake_trt: dict[str, Any], exported: dict[str, Any], tmp_path: Path
) -> None:
    fake_trt["parser_errors"] = 3
    with pytest.raises(ExportFailedError) as err:
        trt_build.build_engine(exported["segmenter"].path, tmp_path, precision="fp32", timing_cache=None)
    msg = str(err.value)
    assert all(f"no importer for op #{i}" in msg for i in range(3))
    assert not list(tmp_path.glob("*.plan"))


def test_failed_build_is_typed(fake_trt: dict[str, Any], exported: dict[str, Any], tmp_path: Path) -> None:
    fake_trt["plan"] = None
    bf16 = _as_precision(exported["segmenter"].path, tmp_path, "bf16")
    out = tmp_path / "engines"
    with pytest.raises(ExportFailedError, match="returned None"):
        trt_build.build_engine(bf16, out, precision="bf16", timing_cache=None)
    assert fake_trt["config"].flags == [] and not out.exists()


def test_decoder_batch_max_is_a_build_setting(
    fake_trt: dict[str, Any], exported: dict[str, Any], tmp_path: Path
) -> None:
    dec = exported["sam_decoder_batched"].path
    art, _ = trt_build.build_engine(
        dec, tmp_path, precision="fp32", timing_cache=None, decoder_max_batch=1024
    )
    assert fake_trt["config"].profiles[0].shapes["point_coords"] == ((1, 1, 2), (1024, 1, 2), (1024, 4, 2))
    assert art.sidecar["profiles"]["point_coords"][2] == [1024, 4, 2]
    assert "--profile batch=1:1024:1024" in art.sidecar["rebuild_command"]
    mine = {"batch": AxisRange(1, 8, 32)}  # an explicit --profile wins
    art, _ = trt_build.build_engine(
        dec, tmp_path, precision="fp32", timing_cache=None, decoder_max_batch=1024, profiles=mine, force=True
    )
    assert art.sidecar["profiles"]["point_coords"][2] == [32, 4, 2]
    seg = exported["segmenter"].path  # other artifacts are not touched
    art, _ = trt_build.build_engine(
        seg, tmp_path, precision="fp32", timing_cache=None, decoder_max_batch=1024
    )
    assert art.sidecar["profiles"]["image"][2] == [8, 3, 1024, 1024]


def test_cli_build_makes_the_precision_onnx_first(
    fake_trt: dict[str, Any], exported: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``zsplg-fast build export/x.onnx --precision fp16``: precision_artifact makes x.fp16.onnx, which is
    what TensorRT parses (strongly typed); the plan is engines/x.fp16.plan."""
    from typer.testing import CliRunner

    from zsplg_fast.cli.main import app
    from zsplg_fast.export import precision as precision_mod
    from zsplg_fast.export.artifact import Artifact

    src = Path(exported["segmenter"].path)
    made: list[str] = []

    def fake(onnx_path: Path, precision: str, *, force: bool = False, **_: Any) -> Artifact:
        made.append(precision)
        return Artifact.open(_as_precision(Path(onnx_path), tmp_path, precision))

    monkeypatch.setattr(precision_mod, "precision_artifact", fake, raising=False)
    out = tmp_path / "engines"
    args = ["build", str(src), "--precision", "fp16", "--out", str(out), "--set", "export.timing_cache=null"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert made == ["fp16"] and fake_trt["parsed"] == str(tmp_path / "segmenter.fp16.onnx")
    side = read_sidecar(out / "segmenter.fp16.plan")
    assert side["precision"] == "fp16" and side["onnx"]["path"] == str(tmp_path / "segmenter.fp16.onnx")
