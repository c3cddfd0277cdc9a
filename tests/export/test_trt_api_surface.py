"""Every TensorRT name the code uses exists in TensorRT 10.3 (JetPack 6), the latest 10.x and 11.x, and
none of the names TensorRT 11 removed is used (no GPU, no TensorRT: an AST scan of ``zsplg_fast/``
against the name lists that ``bench/trt_api_surface.py`` extracts from NVIDIA's bindings wheels)."""

from __future__ import annotations

import ast
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = (ROOT / "zsplg_fast", ROOT / "runtime" / "zsplg_runtime")  # the runtime holds the TRT session
NAMES = Path(__file__).parent / "trt_api"
LINES = ("10.3", "10", "11")
# receivers that hold TensorRT objects inside the modules that import tensorrt (builder, runtime)
RECEIVERS = {"trt", "builder", "network", "parser", "config", "profile", "logger", "engine", "context", "err"}
RECEIVERS |= {"trt_runtime"}  # the runtime's deserialize()
SELF_RECEIVERS = {"engine", "context", "_runtime", "_logger"}
REMOVED_FLAGS = {"FP16", "BF16", "INT8", "FP8"}  # BuilderFlag.*: removed in 11, superseded by strong typing
REMOVED_ANYWHERE = {"OBEY_PRECISION_CONSTRAINTS", "PREFER_PRECISION_CONSTRAINTS", "set_output_type"}


@cache
def api(line: str) -> tuple[str, ...]:
    lines = (NAMES / f"{line}.txt").read_text(encoding="ascii").splitlines()
    return tuple(x for x in lines if x and not x.startswith("#"))


def has(line: str, name: str) -> bool:
    """Suffix match: the linker merges string tails (``INT8`` lives inside ``UINT8``)."""
    return any(s.endswith(name) for s in api(line))


def _path(node: ast.AST) -> list[str]:
    """``self.engine.get_tensor_name(...).x`` → ["self", "engine", "get_tensor_name", "x"]."""
    parts: list[str] = []
    while True:
        if isinstance(node, ast.Attribute):
            parts.append(node.attr)
            node = node.value
        elif isinstance(node, ast.Call):
            node = node.func
        elif isinstance(node, ast.Subscript):
            node = node.value
        elif isinstance(node, ast.Name):
            return [node.id, *reversed(parts)]
        else:
            return []


def _uses_tensorrt(tree: ast.AST) -> bool:
    for n in ast.walk(tree):
        if isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id == "require_tensorrt":
            return True
        if isinstance(n, ast.Import) and any(a.name == "tensorrt" for a in n.names):
            return True
    return False


def scan_source(text: str, rel: str) -> tuple[dict[str, set[str]], list[str], list[str]]:
    """(TensorRT name → files using it, forbidden uses, unscannable getattr calls) of one module."""
    used: dict[str, set[str]] = {}
    forbidden: list[str] = []
    dynamic: list[str] = []
    tree = ast.parse(text)
    trt_file = _uses_tensorrt(tree)
    for n in ast.walk(tree):
        if isinstance(n, ast.Constant) and n.value in REMOVED_ANYWHERE:
            forbidden.append(f"{rel}:{n.lineno} string {n.value!r}")
        if isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id == "getattr" and n.args:
            p = _path(n.args[0])
            if p and p[0] == "trt":
                arg = n.args[1] if len(n.args) > 1 else None
                if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                    for name in [*p[1:], arg.value]:
                        used.setdefault(name, set()).add(rel)
                    if p[-1] == "BuilderFlag" and arg.value in REMOVED_FLAGS:
                        forbidden.append(f"{rel}:{n.lineno} BuilderFlag.{arg.value}")
                else:
                    dynamic.append(f"{rel}:{n.lineno}")
        if not isinstance(n, ast.Attribute):
            continue
        if n.attr in REMOVED_ANYWHERE:
            forbidden.append(f"{rel}:{n.lineno} .{n.attr}")
        p = _path(n)
        if "BuilderFlag" in p[:-1] and p[p.index("BuilderFlag") + 1] in REMOVED_FLAGS:
            forbidden.append(f"{rel}:{n.lineno} {'.'.join(p)}")
        if not trt_file or not p:
            continue
        if n.attr == "precision" and p[0] in RECEIVERS | {"layer"}:
            forbidden.append(f"{rel}:{n.lineno} ILayer.precision")
        if p[0] == "self" and len(p) > 2 and p[1] in SELF_RECEIVERS:
            names = p[2:]
        elif p[0] in RECEIVERS and len(p) > 1:
            names = p[1:]
        else:
            continue
        for name in names:
            if not name.startswith("__"):
                used.setdefault(name, set()).add(rel)
    return used, forbidden, dynamic


@cache
def scan() -> tuple[dict[str, set[str]], list[str], list[str]]:
    """:func:`scan_source` over every module of ``zsplg_fast/`` and ``runtime/zsplg_runtime/``."""
    used: dict[str, set[str]] = {}
    forbidden: list[str] = []
    dynamic: list[str] = []
    for file in sorted(f for package in PACKAGES for f in package.rglob("*.py")):
        u, f, d = scan_source(file.read_text(encoding="utf-8"), str(file.relative_to(ROOT)))
        for name, files in u.items():
            used.setdefault(name, set()).update(files)
        forbidden += f
        dynamic += d
    return used, forbidden, dynamic


OLD_BUILDER = """
trt = require_tensorrt()
config.set_flag(trt.BuilderFlag.FP16)
config.set_flag(trt.BuilderFlag.OBEY_PRECISION_CONSTRAINTS)
layer.precision = trt.float32
layer.set_output_type(0, trt.float32)
config.set_flag(getattr(trt.BuilderFlag, flag))
config.set_flag(getattr(trt.BuilderFlag, "INT8"))
"""


def test_the_scan_catches_the_old_precision_builder() -> None:
    used, forbidden, dynamic = scan_source(OLD_BUILDER, "old.py")
    assert len(forbidden) == 5 and dynamic == ["old.py:7"], (forbidden, dynamic)
    assert {"BuilderFlag", "FP16", "set_flag", "float32", "INT8"} <= set(used)


def test_name_lists_are_the_real_wheels() -> None:
    """The committed lists tell the lines apart: 11 dropped the precision API 10.x still had (``FP16``
    cannot be told apart: it also ends docstrings and the DataType names of 11)."""
    for line in LINES:
        assert len(api(line)) > 2000, f"{line}.txt looks truncated; run bench/trt_api_surface.py"
    for gone in ("OBEY_PRECISION_CONSTRAINTS", "PREFER_PRECISION_CONSTRAINTS", "set_output_type"):
        assert has("10", gone) and has("10.3", gone) and not has("11", gone), gone
    assert all(has(line, "STRONGLY_TYPED") for line in LINES)
    assert not any(x == "INT8" for x in api("10")) and has("10", "INT8")  # tail merged into UINT8


def test_the_scan_sees_the_builder_and_runtime() -> None:
    used, _, _ = scan()
    expected = {
        "NetworkDefinitionCreationFlag",
        "STRONGLY_TYPED",
        "create_network",
        "clear_flag",
        "TF32",
        "create_timing_cache",
        "set_timing_cache",
        "build_serialized_network",
        "deserialize_cuda_engine",
        "set_input_shape",
        "set_tensor_address",
        "get_tensor_profile_shape",
        "execute_async_v3",
    }
    assert expected <= set(used), sorted(expected - set(used))


@pytest.mark.parametrize("line", LINES)
def test_every_tensorrt_name_exists_in_each_line(line: str) -> None:
    used, _, dynamic = scan()
    assert not dynamic, f"getattr on tensorrt with a computed name hides it from this scan: {dynamic}"
    missing = {name: sorted(files) for name, files in used.items() if not has(line, name)}
    header = (NAMES / f"{line}.txt").read_text(encoding="ascii").splitlines()[0]
    assert not missing, f"not in TensorRT {line} ({header}): {missing}"


def test_no_removed_precision_api_is_used() -> None:
    _, forbidden, _ = scan()
    assert not forbidden, f"TensorRT 11 removed these (use strongly typed builds): {forbidden}"
