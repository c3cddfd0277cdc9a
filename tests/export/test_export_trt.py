"""TensorRT builder, the parts without TensorRT: profile planning, cache key, QDQ detection, missing
library (the strongly typed build itself: test_export_trt_strong.py)."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import onnx
import pytest
from onnx import TensorProto, helper

from zsplg_fast.errors import ConfigError, MissingDependencyError
from zsplg_fast.export import tensorrt as trt_build
from zsplg_fast.export.tensors import AxisRange, TensorSpec, parse_axis_ranges
from zsplg_fast.export.trt_info import RuntimeInfo

H200 = RuntimeInfo("10.9.0", "NVIDIA H200", "9.0")
SEG_INPUTS = [TensorSpec("image", "float32", ("batch", 3, "height", "width"))]


def test_plan_profiles_from_symbolic_axes() -> None:
    ranges = parse_axis_ranges(["batch=1:2:8", "height=256:512:1024", "width=256:384:1024"])
    shapes = trt_build.plan_profiles(SEG_INPUTS, ranges)
    assert shapes == {"image": ((1, 3, 256, 256), (2, 3, 512, 384), (8, 3, 1024, 1024))}


def test_dynamic_axis_without_profile_is_an_error() -> None:
    with pytest.raises(ConfigError) as err:
        trt_build.plan_profiles(SEG_INPUTS, parse_axis_ranges(["batch=1:2:8", "height=256:512:1024"]))
    assert "'width'" in str(err.value) and "--profile width=MIN:OPT:MAX" in str(err.value)


def test_profile_parsing_refuses_bad_ranges() -> None:
    assert parse_axis_ranges(["batch=4"])["batch"] == AxisRange(4, 4, 4)
    for bad in ("batch=8:4:16", "batch=0:1:2", "batch", "=1:2:3", "batch=1:2"):
        with pytest.raises(ConfigError):
            parse_axis_ranges([bad])


def test_sidecar_defaults_are_overridden_by_the_cli() -> None:
    side = {"profiles": {"batch": [1, 64, 256], "num_points": [1, 1, 4]}}
    ranges = trt_build.resolve_ranges(side, {"batch": AxisRange(1, 8, 16)})
    assert ranges == {"batch": AxisRange(1, 8, 16), "num_points": AxisRange(1, 1, 4)}


def test_cache_key_tracks_everything_that_changes_the_plan() -> None:
    shapes = trt_build.plan_profiles(SEG_INPUTS, parse_axis_ranges(["batch=1", "height=64", "width=64"]))
    args = ("sha", "fp16", shapes, H200, 1 << 32, False, 3)
    key = trt_build.cache_key(*args)
    assert key == trt_build.cache_key(*args) and len(key) == 16
    other_shapes = trt_build.plan_profiles(
        SEG_INPUTS, parse_axis_ranges(["batch=2", "height=64", "width=64"])
    )
    variants = [
        ("sha2", *args[1:]),
        (args[0], "bf16", *args[2:]),
        (*args[:2], other_shapes, *args[3:]),
        (*args[:3], RuntimeInfo("10.10.0", "NVIDIA H200", "9.0"), *args[4:]),
        (*args[:3], RuntimeInfo("10.9.0", "NVIDIA A100", "8.0"), *args[4:]),
        (*args[:5], True, 3),
    ]
    assert len({trt_build.cache_key(*v) for v in variants} | {key}) == len(variants) + 1


def _qdq_model(path: Path) -> Path:
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"]),
        helper.make_node("DequantizeLinear", ["q", "s", "z"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "qdq",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
        [
            helper.make_tensor("s", TensorProto.FLOAT, [], [0.1]),
            helper.make_tensor("z", TensorProto.INT8, [], [0]),
        ],
    )
    onnx.save(helper.make_model(graph), str(path))
    return path


def test_has_qdq(tmp_path: Path, exported: dict[str, Any]) -> None:
    assert trt_build.has_qdq(_qdq_model(tmp_path / "q.onnx"))
    assert not trt_build.has_qdq(exported["segmenter"].path)


@pytest.mark.skipif(importlib.util.find_spec("tensorrt") is not None, reason="tensorrt is installed here")
def test_missing_tensorrt_says_how_to_install(exported: dict[str, Any], tmp_path: Path) -> None:
    with pytest.raises(MissingDependencyError) as err:
        trt_build.build_engine(exported["segmenter"].path, tmp_path, precision="fp32")
    assert (
        "tensorrt" in str(err.value) and "pip install" in str(err.value) and "--backend ort" in str(err.value)
    )
