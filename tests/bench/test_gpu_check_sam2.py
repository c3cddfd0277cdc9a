"""bench/gpu_check_sam2.py in --smoke mode: the SAM 2 GPU-check code path on the CPU (sam2_tiny, 4×4)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

pytest.importorskip("sam2", reason="the [sam2] extra is not installed")
ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.filterwarnings("ignore::UserWarning", "ignore::FutureWarning")
def test_gpu_check_sam2_smoke_writes_its_table(tmp_path: Path) -> None:
    sys.path.insert(0, str(ROOT / "bench"))  # bench/ is not a package: import the script as a module
    try:
        import gpu_check_sam2
    finally:
        sys.path.remove(str(ROOT / "bench"))
    report = gpu_check_sam2.main(["--smoke", "--out", str(tmp_path)])
    assert "failed" not in report, report.get("failed")
    rows = report["rows"]
    assert {(r["point"], r["pipeline"]) for r in rows} == {
        (p, q) for p in ("defaults", "thresholds-0") for q in ("upstream fp32", "ours fp32")
    }
    up = {r["point"]: r["masks"] for r in rows if r["pipeline"] == "upstream fp32"}
    ours = [r for r in rows if r["pipeline"] == "ours fp32"]
    assert all(r["mean_best_iou"] >= 0.98 and r["masks"] == up[r["point"]] for r in ours), ours
    assert json.loads((tmp_path / "gpu_check_sam2.json").read_text())["rows"] == rows
    assert "| sam2_tiny | thresholds-0 | ours fp32 |" in (tmp_path / "gpu_check_sam2.md").read_text()
