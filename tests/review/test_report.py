"""The label report page: counts, paging, escaping of hostile names, and a real headless Chromium render."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from zsplg_fast.review.report import write_report

EVIL_ID = "<script>alert(1)</script>"
EVIL_CLASS = "<img src=x onerror=\"document.body.setAttribute('data-pwned','1')\">"


def _hostile(toy_labels: Path, tmp_path: Path, copies: int = 0) -> Path:
    """A copy of the toy folder with a hostile image id, class name and meta string, plus ``copies`` more."""
    root = tmp_path / "hostile"
    shutil.copytree(toy_labels, root)
    manifest = json.loads((root / "manifest.json").read_text())
    manifest["classes"][3] = EVIL_CLASS
    (root / "manifest.json").write_text(json.dumps(manifest))
    src = "unlabeled_00002"
    for sub, ext in (("labels", "png"), ("meta", "json")):
        dst = root / sub / f"{EVIL_ID}.{ext}"
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(root / sub / f"{src}.{ext}", dst)
    meta = json.loads((root / "meta" / f"{EVIL_ID}.json").read_text())
    meta["image"] = str(tmp_path / "<b>not here</b>.jpg")
    (root / "meta" / f"{EVIL_ID}.json").write_text(json.dumps(meta))
    for i in range(copies):
        shutil.copy(root / "labels" / "unlabeled_00000.png", root / "labels" / f"copy_{i:03d}.png")
        shutil.copy(root / "meta" / "unlabeled_00000.json", root / "meta" / f"copy_{i:03d}.json")
    return root


def test_report_pages_counts_and_escapes(toy_labels: Path, toy_world: Path, tmp_path: Path) -> None:
    root = _hostile(toy_labels, tmp_path, copies=27)
    index = write_report(root, tmp_path / "report", top=12, per_page=5)
    pages = sorted(p.name for p in (tmp_path / "report").glob("*.html"))
    assert pages == ["index.html", "page-2.html", "page-3.html"]
    assert len(list((tmp_path / "report" / "thumbs").glob("*.png"))) == 12
    text = "".join((tmp_path / "report" / p).read_text() for p in pages)
    assert "30 images; showing the 12 most in need of review" in index.read_text()
    assert EVIL_ID not in text and EVIL_CLASS not in text and "<b>not here" not in text
    assert "&lt;img src=x onerror=" in text
    gt = tmp_path / "gt"
    gt.mkdir()
    for n in ("unlabeled_00000", "unlabeled_00001"):
        shutil.copy(toy_world / "SegmentationClass" / f"{n}.png", gt / f"{n}.png")
    with_gt = write_report(toy_labels, tmp_path / "report-gt", gt=gt).read_text()
    from zsplg_fast.train.evaluate import evaluate_folders

    classes = json.loads((toy_labels / "manifest.json").read_text())["classes"]
    rep = evaluate_folders(toy_labels / "labels", gt, classes, missing="skip")
    assert "IoU against ground truth" in with_gt and rep["images"] == 2
    for row in rep["per_class"]:
        assert f"{row['name']}</td><td>" in with_gt and f"<td>{100 * row['iou']:.2f}</td>" in with_gt


def test_report_renders_in_headless_chromium(toy_labels: Path, tmp_path: Path) -> None:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("chromium is not installed (system package; `make sysdeps` installs it)")
    root = _hostile(toy_labels, tmp_path)
    index = write_report(root, tmp_path / "report")
    args = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run"]
    args += ["--disable-background-networking", "--disable-component-update", "--disable-sync"]
    args += [f"--user-data-dir={tmp_path / 'chrome'}", "--enable-logging=stderr", "--v=0"]
    args += ["--virtual-time-budget=5000", "--dump-dom", index.resolve().as_uri()]
    res = subprocess.run(args, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    console = [ln for ln in res.stderr.splitlines() if ":CONSOLE" in ln]
    assert not console, console
    body = re.search(r"<body[^>]*>", res.stdout)
    assert body is not None, res.stdout[:500]
    assert 'data-thumbs-loaded="3"' in body.group(0) and 'data-thumbs-failed="0"' in body.group(0)
    assert "data-pwned" not in body.group(0)
    assert res.stdout.count("<script>") == 1  # ours; the hostile id renders as text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in res.stdout
