"""bench/gpu_check.sh in --smoke mode: every section's code path runs on the CPU and lands in the JSON."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _gpu_check() -> ModuleType:  # bench/ is not a package: import the script as a module
    sys.path.insert(0, str(ROOT / "bench"))
    try:
        import gpu_check
    finally:
        sys.path.remove(str(ROOT / "bench"))
    return gpu_check


@pytest.mark.slow  # four subprocesses (torch + segment_anything + open_clip imports): ~1 min of CPU
def test_gpu_check_smoke_writes_every_section(tmp_path: Path) -> None:
    env = {**os.environ, "OUT": str(tmp_path), "PYTHON": sys.executable}
    proc = subprocess.run(
        ["bash", str(ROOT / "bench" / "gpu_check.sh"), "--smoke"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    sections = report["sections"]
    assert set(sections) == {"env", "clip", "amg:vit_b", "compile:vit_b", "engines"}
    bad = {k: v for k, v in sections.items() if v["status"] != "ok"}
    assert not bad, bad
    amg = sections["amg:vit_b"]
    assert amg["ours"]["fp32"]["mean_best_iou_vs_upstream"] >= 0.98
    assert amg["ours"]["fp32_fullres"]["mean_best_iou_vs_upstream"] >= 0.98
    assert 0.9 < amg["bf16_vs_fp32_engines"]["embedding_cosine"] <= 1.0
    assert amg["colour_sam_vs_upstream"]["mean_best_iou"] >= 0.98  # structured masks: ours == upstream
    assert amg["ours"]["fp32"]["speedup_vs_upstream"] > 0
    assert amg["ours"]["fp32_shared"]["mean_best_iou_vs_ours_fp32"] == 1.0  # the decoder pair is exact
    assert sections["compile:vit_b"]["mean_best_iou_vs_bf16_eager"] >= 0.98
    assert 0.9 < sections["clip"]["batch1"]["bf16_vs_fp32_cosine_mean"] <= 1.0
    # the exported decoder ran on onnxruntime CPU in smoke mode, with parity against torch
    dec = sections["engines"]["artifacts"]["sam_decoder_batched"]["ort-cpu"]
    assert dec["status"] == "ok" and dec["low_res_masks"]["passed"], dec
    assert "tensorrt" in sections["engines"]["runtimes"] or "tensorrt" in sections["engines"]["not_run"]
    # one table to paste, written beside the JSON and printed
    table = (tmp_path / "gpu_check.md").read_text()
    assert table.startswith("| check | seconds | ratio | fidelity / note |")
    assert "sam_decoder_batched on ort-cpu" in table and "sam_decoder_batched on ort-cpu" in proc.stdout


def test_partial_report_is_written_after_each_section(tmp_path: Path) -> None:
    """A run cut short still reports: the writer rewrites JSON + table, and failed sections show why."""
    gpu_check = _gpu_check()
    out = tmp_path / "gpu_check.json"
    report = {"smoke": False, "sections": {"env": {"status": "ok", "device": "cuda", "torch": "x"}}}
    gpu_check._write(report, out)
    assert json.loads(out.read_text())["sections"]["env"]["status"] == "ok"
    report["sections"]["amg:vit_b"] = {"status": "timeout", "cap_s": 50.0}
    gpu_check._write(report, out)
    table = out.with_suffix(".md").read_text()
    assert "| amg:vit_b | – | – | timeout" in table
    assert not list(tmp_path.glob("*.tmp"))


def test_stub_missing_only_stubs_absent_modules() -> None:
    gpu_check = _gpu_check()
    name = "zsplg_absent_pkg_for_test"
    try:
        assert gpu_check.stub_missing(("json", name)) == [name]
        mod = __import__(name)
        assert mod.anything(1, 2).chained.call() is not None  # inert stand-ins
    finally:
        sys.modules.pop(name, None)


def test_section_stopped_at_its_cap_reports_what_it_measured(tmp_path: Path) -> None:
    """The driver stops a worker with SIGTERM at its cap; the worker writes its partial result first."""
    gpu_check = _gpu_check()
    frag = tmp_path / "frag.json"
    code = (
        f"import sys, time, pathlib; sys.path.insert(0, {str(ROOT / 'bench')!r}); "
        "import gpu_check, gpu_sections; gpu_sections.PARTIAL['upstream_fp32_s'] = [1.5]; "
        f"gpu_check._write_partial_on_term(pathlib.Path({str(frag)!r}), time.perf_counter(), []); "
        "print('ready', flush=True); time.sleep(60)"
    )
    result = gpu_check._run_worker([sys.executable, "-c", code], frag, limit=3.0)
    assert result["status"] == "timeout" and result["cap_s"] == 3.0
    assert result["partial"] is True and result["upstream_fp32_s"] == [1.5]
    rows = gpu_check.table_rows({"sections": {"amg:vit_b": {**result, "variant": "vit_b", "grid": 32}}})
    assert rows[0][3].startswith("timeout at the 3.0 s cap")
    assert rows[1][:3] == ("AMG vit_b 32×32, upstream fp32", "1.500", "1.00×")
