"""Training and its run folder: the user's files are never replaced (a folder without the marker is
refused before any model is built), and a checkpoint that cannot be written (disk full) ends the run
with one line naming the file and the iteration (exit 1), no temp file left, and ``--resume`` works."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest
import torch

from zsplg_fast.cli.main import main


def _train(synth: Path, out: Path, tmp: Path, *extra: str) -> list[str]:
    sets = [
        "train.data.crop_size=64",
        "train.data.workers=0",
        f"train.data.preflight_cache={tmp / 'pf'}",
        "train.supervised.batch_size=4",
        "train.supervised.max_iters=4",
        "train.eval.every_epochs=0",
        "train.run.device=cpu",
        "train.run.checkpoint_every=2",
    ]
    args = ["train", "--data", f"synthetic:{synth}", "--backbone", "tiny", "--labeled-only"]
    return [*args, "--out", str(out), *[a for kv in sets for a in ("--set", kv)], *extra]


def _cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    with pytest.raises(SystemExit) as done:
        main(argv)
    return int(done.value.code or 0), capsys.readouterr().err


def test_disk_full_on_a_checkpoint_is_one_line_and_resume_continues(
    synth: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    real_save, saves = torch.save, [0]

    def full_after_one(obj: object, f: object, *a: object, **kw: object) -> None:
        saves[0] += 1
        if saves[0] > 1:
            f.write(b"partial")  # type: ignore[attr-defined]
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_save(obj, f, *a, **kw)

    monkeypatch.setattr(torch, "save", full_after_one)
    out = tmp_path / "run"
    code, err = _cli(_train(synth, out, tmp_path), capsys)
    lines = err.strip().splitlines()
    assert code == 1 and len(lines) == 1 and "Traceback" not in err, err
    # latest.pth at iteration 2 was written; the end-of-run evaluation's best.pth fills the disk
    assert f"{out / 'best.pth'}: cannot write: No space left on device [errno 28]" in lines[0]
    assert f"stopped at iteration 4/4, last checkpoint {out / 'latest.pth'}" in lines[0]
    assert not list(out.glob(".*.tmp"))  # the partial temp checkpoint is gone
    monkeypatch.setattr(torch, "save", real_save)
    code, err = _cli(_train(synth, out, tmp_path, "--resume"), capsys)
    assert code == 0, err
    assert (out / "final.pth").is_file() and (out / "metrics.json").is_file()


def test_only_rank_0_checks_the_run_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Under torchrun rank 0 claims the folder (marker written through a temp file); another rank
    checking at that moment saw a folder of foreign files and exited 2 (a flaky 2-process test)."""
    from zsplg_fast.errors import OutputExistsError
    from zsplg_fast.train.loop import check_run_folder

    out = tmp_path / "run"
    out.mkdir()
    (out / ".zsplg-fast.json.claiming.tmp").write_text("{}")  # what rank 1 could see mid-claim
    monkeypatch.setenv("RANK", "1")
    check_run_folder(out, "unimatch")  # rank 1 never writes here: no check
    monkeypatch.setenv("RANK", "0")
    with pytest.raises(OutputExistsError):
        check_run_folder(out, "unimatch")


@pytest.mark.parametrize("command", ["train", "unimatch"])
def test_a_users_latest_pth_is_not_a_run_of_ours(
    synth: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], command: str
) -> None:
    """The marker rule first: a folder of the user's holding a file named latest.pth is "not made by
    zsplg-fast train", not "holds a run; pass --resume" (--resume does not make it ours either)."""
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "latest.pth").write_bytes(b"\x00my own checkpoint")
    (mine / "metrics.json").write_text('{"loss": 0.1}')  # a JSON of the user's: not our keys
    argv = _train(synth, mine, tmp_path)
    argv[0] = command
    if command == "unimatch":
        argv.remove("--labeled-only")
    for extra in ([], ["--resume"]):
        code, err = _cli([*argv, *extra], capsys)
        assert code == 2 and f"not made by `zsplg-fast {command}`" in err and "--resume" not in err, err
    assert sorted(p.name for p in mine.iterdir()) == ["latest.pth", "metrics.json"]
    assert (mine / "latest.pth").read_bytes() == b"\x00my own checkpoint"
