"""The components × backends matrix on tiny models: files, schema, unavailable backends with reasons."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from zsplg_fast.bench.backends import availability
from zsplg_fast.bench.report import check_report, markdown
from zsplg_fast.errors import OutputExistsError

CPU_BACKENDS = ["torch", "ort_cpu"]  # as tests/bench/conftest.py runs them
GPU_BACKENDS = ["trt_fp16", "ort_cuda"]


def test_writes_json_markdown_png(bench_run: tuple[dict[str, Any], Path]) -> None:
    _, out = bench_run
    on_disk = json.loads((out / "bench.json").read_text())
    assert check_report(on_disk) == []
    assert on_disk["complete"] is True
    md = (out / "bench.md").read_text()
    assert "| case |" in md and "tiny" in md and "random-init" in md
    assert "malloc" in md.lower() or "glibc" in md
    with Image.open(out / "bench.png") as png:
        assert png.format == "PNG" and png.size[0] > 400 and png.size[1] > 200


def test_every_case_on_every_cpu_backend_is_timed(bench_run: tuple[dict[str, Any], Path]) -> None:
    report, _ = bench_run
    cases = {c["case"] for c in report["cells"]}
    # 1 decoder batch + 1 text batch + 2 segmenter sizes + 1 image case
    assert len(cases) == 5
    for c in report["cells"]:
        if c["backend"] in CPU_BACKENDS:
            assert c["status"] == "ok", (c["case"], c["backend"], c["reason"])
            t = c["timing"]
            assert 1 <= t["iters"] <= 3 and t["median_ms"] > 0 and t["throughput"] > 0
            assert t["peak_rss_mib"] > 0
    dec = next(
        c for c in report["cells"] if c["component"] == "sam_decoder_batched" and c["backend"] == "torch"
    )
    assert dec["items"] == 4 and dec["unit"] == "prompt set"


def test_unavailable_backends_listed_with_reason(bench_run: tuple[dict[str, Any], Path]) -> None:
    report, out = bench_run
    reasons = availability(GPU_BACKENDS)
    listed = {b["name"]: b for b in report["backends"]}
    assert set(GPU_BACKENDS) <= set(listed)
    for name, reason in reasons.items():
        if reason is None:
            pytest.skip(f"{name} is available on this machine")
        assert not listed[name]["available"] and listed[name]["reason"] == reason
        cells = [c for c in report["cells"] if c["backend"] == name]
        assert cells and all(c["status"] == "unavailable" and c["reason"] == reason for c in cells)
    md = (out / "bench.md").read_text()
    assert "unavailable [" in md and "tensorrt" in md.lower()


def test_machine_versions_and_weights_recorded(bench_run: tuple[dict[str, Any], Path]) -> None:
    report, _ = bench_run
    assert report["machine"]["logical_cores"] >= 1 and "cpu" in report["machine"]
    assert report["versions"]["torch"] and report["versions"]["onnxruntime"]
    assert report["runtime"]["torch_threads"] == 1
    assert report["models"]["sam"]["weights"] == "random-init"
    assert report["models"]["segmenter"]["backbone"] == "tiny"


def test_check_report_catches_problems(bench_run: tuple[dict[str, Any], Path]) -> None:
    report, _ = bench_run
    bad = json.loads(json.dumps(report))
    bad["cells"][0]["status"] = "failed"
    bad["cells"][0]["reason"] = ""
    bad["backends"][0] = {"name": "x", "available": False, "reason": ""}
    del bad["runtime"]["malloc"]
    problems = check_report(bad)
    assert any("without a reason" in p for p in problems) and any("runtime.malloc" in p for p in problems)


def test_skip_and_failing_cells_do_not_stop_the_run(
    make_bench_config: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from zsplg_fast.bench import backends
    from zsplg_fast.bench.matrix import run_bench

    def broken(*args: Any) -> Any:
        raise RuntimeError("simulated onnxruntime failure")

    monkeypatch.setitem(backends.ENGINE_BUILDERS, "onnx", broken)
    cfg = make_bench_config(
        tmp_path / "out",
        tmp_path / "art",
        **{
            "bench.components": ["segmenter"],
            "bench.segmenter_sizes": ["64"],
            "bench.skip": ["segmenter:torch"],
        },
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        report = run_bench(cfg)
    status = {c["backend"]: c for c in report["cells"]}
    assert status["torch"]["status"] == "skipped"
    assert (
        status["ort_cpu"]["status"] == "failed"
        and "simulated onnxruntime failure" in status["ort_cpu"]["reason"]
    )
    assert check_report(report) == [] and report["complete"]
    assert "failed [" in markdown(report)
    with pytest.raises(OutputExistsError):  # the results folder is not reused without force
        run_bench(cfg)
