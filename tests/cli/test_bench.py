"""`zsplg-fast bench`: options → config → run_bench; `bench labeling` → bench_labeling with its config."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from typer.testing import CliRunner

from zsplg_fast.bench.backends import availability
from zsplg_fast.bench.report import check_report
from zsplg_fast.cli.main import app


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


def test_bench_torch_only_writes_the_report(tmp_path: Path) -> None:
    out = tmp_path / "cli"
    args = ["bench", "--components", "segmenter", "--backends", "torch,trt_fp32", "--segmenter", "tiny"]
    args += ["--segmenter-sizes", "64,32x48", "--budget-s", "0.05", "--max-iters", "2", "--threads", "1"]
    result = CliRunner().invoke(app, [*args, "--out", str(out)])
    assert result.exit_code == 0, result.output
    report = json.loads((out / "bench.json").read_text())
    assert check_report(report) == []
    assert [c["case"].split()[-1] for c in report["cells"]][::2] == ["1x3x64x64", "1x3x32x48"]
    if availability(["trt_fp32"])["trt_fp32"] is not None:
        assert [c["status"] for c in report["cells"]] == ["ok", "unavailable"] * 2
        assert "unavailable [1]" in result.output
    assert (out / "bench.md").is_file() and (out / "bench.png").is_file()
    again = CliRunner().invoke(app, [*args, "--out", str(out)])
    assert again.exit_code != 0  # not over a previous run without --force


def test_bad_names_are_refused_with_the_valid_ones() -> None:
    result = CliRunner().invoke(app, ["bench", "--components", "sam_encoderr"])
    assert result.exit_code != 0
    result = CliRunner().invoke(app, ["bench", "--decoder-batches", "a,b"])
    assert result.exit_code != 0


def test_bench_labeling_routes_to_the_labeling_benchmark(monkeypatch: pytest.MonkeyPatch) -> None:
    from zsplg_fast.bench import labeling

    seen: dict[str, Any] = {}

    def fake(cfg: Any, log: Any = print) -> dict[str, Any]:
        seen["cfg"] = cfg
        return {}

    monkeypatch.setattr(labeling, "bench_labeling", fake)
    args = [
        "bench",
        "labeling",
        "--grids",
        "8,16",
        "--images",
        "1",
        "--image-size",
        "96x128",
        "--sam",
        "tiny",
    ]
    result = CliRunner().invoke(app, [*args, "--out", "x/y"])
    assert result.exit_code == 0, result.output
    cfg = seen["cfg"]
    assert cfg.grids == (8, 16) and cfg.images == 1 and cfg.image_hw == (96, 128)
    assert cfg.sam_variant == "tiny" and cfg.out == "x/y"
