"""Tiny models for the benchmark tests: a tiny open_clip config registered under a test name, and one
bench run (tiny SAM decoder, tiny CLIP text tower, tiny segmenter) shared by the report tests."""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

BENCH_CLIP = "tiny-clip-bench-test"
BENCH_CLIP_CFG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 64, "layers": 1, "width": 32, "patch_size": 16, "head_width": 16},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}
CPU_BACKENDS = ["torch", "ort_cpu"]
GPU_BACKENDS = ["trt_fp16", "ort_cuda"]  # unavailable here: listed with their reasons


@pytest.fixture(scope="session", autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)  # 2 shared cores
    warnings.filterwarnings("ignore", message=".*RANDOM.*")


@pytest.fixture(scope="session")
def bench_clip(tmp_path_factory: pytest.TempPathFactory) -> str:
    from zsplg_fast.models import open_clip_config_builder, register_clip_model

    path = tmp_path_factory.mktemp("clipcfg") / f"{BENCH_CLIP}.json"
    path.write_text(json.dumps(BENCH_CLIP_CFG))
    register_clip_model(BENCH_CLIP, open_clip_config_builder(path))
    return BENCH_CLIP


@pytest.fixture(scope="session")
def make_bench_config(bench_clip: str) -> Callable[..., Any]:
    """``make_bench_config(out, artifacts, **overrides)`` → a root config for a tiny, quick bench run."""
    return bench_config


def bench_config(out: Path, artifacts: Path, **overrides: Any) -> Any:
    """A root config for a tiny, quick bench run (legacy exporter: seconds, not tens of seconds)."""
    from zsplg_fast.config import load_config

    base = {
        "sam.variant": "tiny",
        "clip.model": BENCH_CLIP,
        "clip.image_size": 64,
        "clip.gem_depth": 1,
        "bench.components": ["sam_decoder_batched", "clip_text", "segmenter", "segmenter_image"],
        "bench.backends": CPU_BACKENDS + GPU_BACKENDS,
        "bench.segmenter_backbone": "tiny",
        "bench.segmenter_classes": 4,
        "bench.segmenter_sizes": ["64", "48x80"],
        "bench.decoder_batches": [4],
        "bench.text_batch": 4,
        "bench.image_size": "48x64",
        "bench.budget_s": 0.05,
        "bench.max_iters": 3,
        "bench.threads": 1,
        "bench.exporter": "legacy",
        "bench.artifacts": str(artifacts),
        "bench.out": str(out),
    }
    base.update(overrides)
    return load_config(None, base)


@pytest.fixture(scope="session")
def bench_run(bench_clip: str, tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], Path]:
    """One run of the matrix on tiny models: (report, out folder)."""
    from zsplg_fast.bench.matrix import run_bench

    root = tmp_path_factory.mktemp("bench")
    cfg = bench_config(root / "results", root / "artifacts")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        report = run_bench(cfg)
    return report, root / "results"
