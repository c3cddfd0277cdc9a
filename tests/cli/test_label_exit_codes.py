"""`zsplg-fast label` exit codes and I/O failures, through ``main`` with a stand-in labeler.

0 all done; 3 done but some images failed (one errors.jsonl line per failed image, however many
reruns); 2 usage / input errors (an empty dataset); 1 a failure that stopped the job: a full disk,
read-only or unwritable folder, or ``--out`` naming a file, each as one line naming the path and the
errno text, with the summary so far, no temp file left, and a rerun that resumes."""

from __future__ import annotations

import errno
import json
import os
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from zsplg_fast.errors import ConfigError
from zsplg_fast.labeling.build import BuiltLabeler
from zsplg_fast.labeling.labeler import LabelResult
from zsplg_fast.utils.outdir import MARKER

from .test_user_folders import run_cli, snapshot


@pytest.fixture
def images(tmp_path: Path) -> Path:
    """12 decodable 32 px images and 2 corrupt ones (``bad*.png``) in a plain folder."""
    root = tmp_path / "imgs"
    root.mkdir()
    rng = np.random.default_rng(0)
    for i in range(12):
        Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(root / f"img{i:02d}.png")
    for name in ("bad1.png", "bad2.png"):
        (root / name).write_bytes(b"not a png")
    return root


@pytest.fixture
def labeler_calls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Replace the SAM x CLIP labeler by a threshold; records 'built' and one entry per image."""
    calls: list[str] = []

    def build(cfg: object, class_names: object = None, n_images: object = None) -> BuiltLabeler:
        calls.append("built")

        def labeler(image: np.ndarray) -> LabelResult:
            calls.append("image")
            return LabelResult((image.mean(-1) > 128).astype(np.uint8), {"num_masks": 1})

        manifest = {"fingerprint": "stand-in", "classes": ["background", "bright"]}
        return BuiltLabeler(labeler, [["background"], ["bright"]], manifest)  # type: ignore[arg-type]

    monkeypatch.setattr("zsplg_fast.labeling.run.build_labeler", build)
    return calls


def _label(src: Path, out: Path, *extra: str) -> list[str]:
    return ["label", "--data", f"folder:{src}", "--classes", "voc", "--out", str(out), *extra]


def test_exit_3_when_images_failed_and_errors_keep_one_line_per_image(
    images: Path, tmp_path: Path, labeler_calls: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    for _ in range(3):  # reruns retry the failed images and do not duplicate their lines
        code, stdout, _ = run_cli(_label(images, out), capsys)
        assert code == 3, stdout
        lines = (out / "errors.jsonl").read_text().splitlines()
        assert sorted(json.loads(line)["id"] for line in lines) == ["bad1", "bad2"]
    assert "2 images failed" in stdout
    for name in ("bad1.png", "bad2.png"):
        (images / name).unlink()
    code, _, _ = run_cli(_label(images, out), capsys)
    assert code == 0 and (out / "errors.jsonl").read_text() == ""


def test_empty_dataset_is_an_error_and_writes_nothing(
    tmp_path: Path, labeler_calls: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "readme.txt").write_text("no images here")
    code, _, err = run_cli(_label(empty, tmp_path / "out"), capsys)
    assert code == 2 and err.startswith("error: DatasetError") and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists() and labeler_calls == []


def test_nothing_is_written_into_out_when_the_labeler_cannot_be_built(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from zsplg_fast.data.synthetic import generate_dataset

    generate_dataset(tmp_path / "ds", num=4, num_classes=2, seed=0, size=32)

    def broken(cfg: object, class_names: object = None, n_images: object = None) -> BuiltLabeler:
        raise ConfigError("sam.checkpoint", "x.pth", "no such file")

    monkeypatch.setattr("zsplg_fast.labeling.run.build_labeler", broken)
    out = tmp_path / "out"
    argv = ["label", "--data", f"synthetic:{tmp_path / 'ds'}", "--classes", "auto", "--out", str(out)]
    code, _, err = run_cli(argv, capsys)
    assert code == 2 and "ConfigError" in err
    assert not out.exists()  # no classes.txt, no marker: the run never started
    out.mkdir()
    assert run_cli(argv, capsys)[0] == 2 and list(out.iterdir()) == []


def test_out_naming_a_file_is_one_line_before_the_model_loads(
    images: Path, tmp_path: Path, labeler_calls: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    f = tmp_path / "labels.txt"
    f.write_text("mine")
    code, _, err = run_cli(_label(images, f), capsys)
    assert code == 1 and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert f"{f}: cannot write: Not a directory" in err
    assert f.read_text() == "mine" and labeler_calls == []


@pytest.mark.parametrize("code", [errno.EACCES, errno.EROFS])
def test_unwritable_out_is_refused_before_the_model_loads(
    images: Path,
    tmp_path: Path,
    labeler_calls: list[str],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    code: int,
) -> None:
    real = os.statvfs

    class ReadOnly:
        def __init__(self, st: os.statvfs_result) -> None:
            self.f_flag, self.f_bfree, self.f_bavail = st.f_flag | os.ST_RDONLY, st.f_bfree, st.f_bavail

    if code == errno.EROFS:
        monkeypatch.setattr("zsplg_fast.utils.outdir.os.statvfs", lambda p: ReadOnly(real(p)))
    else:  # root ignores mode bits: simulate what access(2) answers a user
        monkeypatch.setattr("zsplg_fast.utils.outdir.os.access", lambda p, mode: False)
    rc, _, err = run_cli(_label(images, tmp_path / "out"), capsys)
    assert rc == 1 and os.strerror(code) in err and len(err.strip().splitlines()) == 1
    assert labeler_calls == [] and not (tmp_path / "out").exists()


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EACCES, errno.EROFS])
def test_a_failed_write_stops_the_job_with_its_summary_and_a_rerun_resumes(
    images: Path,
    tmp_path: Path,
    labeler_calls: list[str],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    code: int,
) -> None:
    for name in ("bad1.png", "bad2.png"):
        (images / name).unlink()
    for i in range(12, 24):  # 24 images, so running on would be visible
        (images / f"img{i:02d}.png").write_bytes((images / "img00.png").read_bytes())
    lock, count = threading.Lock(), [0]
    real_fsync = os.fsync

    def failing_fsync(fd: int) -> None:  # the disk fills (or turns read-only) after 6 files
        with lock:
            count[0] += 1
            if count[0] > 6:
                raise OSError(code, os.strerror(code))
        real_fsync(fd)

    monkeypatch.setattr("zsplg_fast.utils.io.os.fsync", failing_fsync)
    out = tmp_path / "out"
    rc, stdout, err = run_cli(_label(images, out), capsys)
    assert rc == 1, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    assert f"{out / 'labels'}" in lines[0] and os.strerror(code) in lines[0] and "rerun" in lines[0]
    assert "labeled" in stdout and "24" in stdout  # the summary so far
    assert labeler_calls.count("image") < 24  # it stopped instead of labeling on, writing nothing
    files = snapshot(out)
    assert not [p for p in files if p.endswith(".tmp")]  # no temp file left
    done = len(list((out / "meta").glob("*.json")))
    assert done == 2 and MARKER in files  # marker, manifest, 2 × (PNG, meta) = 6 files written
    monkeypatch.setattr("zsplg_fast.utils.io.os.fsync", real_fsync)
    labeler_calls.clear()
    rc, stdout, _ = run_cli(_label(images, out), capsys)
    assert rc == 0 and labeler_calls.count("image") == 22  # resumed: only the 22 not done
    assert len(list((out / "meta").glob("*.json"))) == 24


def test_debug_shows_the_traceback(images: Path, tmp_path: Path, labeler_calls: list[str]) -> None:
    from zsplg_fast.cli.main import main
    from zsplg_fast.errors import OutputWriteError

    f = tmp_path / "labels.txt"
    f.write_text("mine")
    with pytest.raises(OutputWriteError, match="Not a directory"):
        main(["--debug", *_label(images, f)])
