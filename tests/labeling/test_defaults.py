"""``label.precision: auto`` / ``label.compile: auto``: bf16 + torch.compile for the torch backend on CUDA
(compile only for jobs long enough to repay it), exact fp32 eager elsewhere; a way back; the cache dir."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from zsplg_fast.config import load_config
from zsplg_fast.errors import ConfigError
from zsplg_fast.labeling import defaults
from zsplg_fast.labeling.build import _resolve_mode
from zsplg_fast.labeling.defaults import COMPILE_MIN_IMAGES, resolve_run_mode

CPU, CUDA = torch.device("cpu"), torch.device("cuda")


@pytest.fixture
def bf16_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    """A fake bf16-capable GPU (the resolution only asks torch whether bf16 is supported)."""
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)


def test_config_defaults_are_auto() -> None:
    cfg = load_config()
    assert (cfg.label.precision, cfg.label.compile) == ("auto", "auto")


def test_cpu_stays_exact_fp32_and_eager() -> None:
    for n in (None, 10, 10_000):
        mode = resolve_run_mode("auto", "auto", CPU, "torch", n)
        assert (mode.precision, mode.compile) == ("fp32", False)


def test_cuda_torch_runs_bf16_and_compiles_long_jobs_only(bf16_gpu: None) -> None:
    assert COMPILE_MIN_IMAGES == 100
    long = resolve_run_mode("auto", "auto", CUDA, "torch", COMPILE_MIN_IMAGES)
    assert (long.precision, long.compile) == ("bf16", True)
    short = resolve_run_mode("auto", "auto", CUDA, "torch", COMPILE_MIN_IMAGES - 1)
    assert (short.precision, short.compile) == ("bf16", False)
    assert resolve_run_mode("auto", "auto", CUDA, "torch", None).compile is False  # unknown size
    assert "99 images" in short.reason and "bf16" in long.reason


def test_the_way_back_and_other_backends(bf16_gpu: None) -> None:
    back = resolve_run_mode("fp32", "off", CUDA, "torch", 10_000)
    assert (back.precision, back.compile) == ("fp32", False)
    for backend in ("ort", "trt", "upstream"):  # artifacts carry their own precision; upstream is fp32
        mode = resolve_run_mode("auto", "auto", CUDA, backend, 10_000)
        assert (mode.precision, mode.compile) == ("fp32", False)
    with pytest.raises(ConfigError, match="torch backend"):
        resolve_run_mode("auto", "on", CUDA, "ort", 10)
    with pytest.raises(ConfigError, match="compile"):
        resolve_run_mode("auto", "maybe", CUDA, "torch", 10)


def test_gpu_without_bf16_stays_fp32(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert resolve_run_mode("auto", "auto", CUDA, "torch", 10).precision == "fp32"


def test_resolved_config_and_persistent_inductor_cache(
    bf16_gpu: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    cfg, mode = _resolve_mode(load_config(), CUDA, 500)
    assert (cfg.label.precision, cfg.label.compile, mode.compile) == ("bf16", "on", True)
    cache = tmp_path / "zsplg-fast" / "inductor"
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == str(cache) and cache.is_dir()
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "mine"))  # the user's setting wins
    assert defaults.persistent_inductor_cache() == tmp_path / "mine"
    cfg, mode = _resolve_mode(load_config(overrides={"label.masks": "upstream"}), CUDA, 500)
    assert (cfg.label.precision, cfg.label.compile) == ("fp32", "off")


def test_torch_engines_are_compiled_when_resolved_on(monkeypatch: pytest.MonkeyPatch) -> None:
    """The resolved ``compile: on`` reaches the SAM TorchEngines (torch.compile recorded, not run)."""
    from zsplg_fast.labeling.engines import label_engines
    from zsplg_fast.models import build_sam

    compiled_modules: list[torch.nn.Module] = []
    monkeypatch.setattr(torch, "compile", lambda m, **k: compiled_modules.append(m) or m.forward)
    torch.manual_seed(0)
    sam = build_sam("tiny")
    for mode, compiled in (("on", True), ("off", False)):
        cfg = load_config(overrides={"label.precision": "fp32", "label.compile": mode})
        eng = label_engines(cfg, sam, torch.nn.Identity(), {}, CPU)
        assert eng.describe["compile"] is compiled
        assert (eng.encoder._run is not eng.encoder.module) is compiled
    assert len(compiled_modules) == 3  # encoder, decoder_image, decoder_shared
