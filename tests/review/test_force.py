"""`labels export / import / report --force`: the rule of deploy, infer and bench. A rerun into the
command's own folder is refused without --force ("pass --force to replace it") and replaced with it; a
folder of the user's (or another command's) is refused even with --force, every file kept byte for byte."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from zsplg_fast.cli.main import main
from zsplg_fast.utils.outdir import read_marker

USER_FILES = {"notes.txt": b"my notes\n", "index.html": b"<p>mine</p>", "export.json": b'{"mine": 1}'}


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    with pytest.raises(SystemExit) as done:
        main(argv)
    captured = capsys.readouterr()
    return int(done.value.code or 0), captured.out + captured.err


def _snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _commands(toy_labels: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> dict[str, list[str]]:
    src = tmp_path / "src"
    assert _run(["labels", "export", str(toy_labels), "-f", "coco", "--out", str(src)], capsys)[0] == 0
    return {
        "labels export": ["labels", "export", str(toy_labels), "-f", "coco"],
        "labels import": [
            "labels",
            "import",
            str(src / "instances.json"),
            "-f",
            "coco",
            "--classes",
            str(toy_labels),
        ],
        "labels report": ["labels", "report", str(toy_labels), "--top", "1"],
    }


def test_force_replaces_only_the_commands_own_folder(
    toy_labels: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    commands = _commands(toy_labels, tmp_path, capsys)
    for command, argv in commands.items():
        out = tmp_path / command.replace(" ", "-")
        assert _run([*argv, "--out", str(out)], capsys)[0] == 0
        assert read_marker(out)["command"] == command  # type: ignore[index]
        (out / "stale.txt").write_text("from the first run")
        code, text = _run([*argv, "--out", str(out)], capsys)
        assert code == 2 and "pass --force to replace it" in text, text
        assert (out / "stale.txt").exists()
        code, text = _run([*argv, "--out", str(out), "--force"], capsys)
        assert code == 0, text
        assert not (out / "stale.txt").exists() and read_marker(out)["command"] == command  # type: ignore[index]
        assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp or old folder left
    # another command's folder is not this command's, --force or not
    export_dir = tmp_path / "labels-export"
    before = _snapshot(export_dir)
    code, text = _run([*commands["labels report"], "--out", str(export_dir), "--force"], capsys)
    assert code == 2 and "was made by `zsplg-fast labels export`" in text, text
    assert _snapshot(export_dir) == before


@pytest.mark.parametrize("command", ["labels export", "labels import", "labels report"])
def test_force_never_touches_a_users_folder(
    toy_labels: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], command: str
) -> None:
    argv = _commands(toy_labels, tmp_path, capsys)[command]
    mine = tmp_path / "mine"
    for name, data in USER_FILES.items():
        (mine / name).parent.mkdir(parents=True, exist_ok=True)
        (mine / name).write_bytes(data)
    code, text = _run([*argv, "--out", str(mine), "--force"], capsys)
    assert code == 2 and f"not made by `zsplg-fast {command}`" in text, text
    assert _snapshot(mine) == USER_FILES and "Traceback" not in text


def test_an_empty_folder_is_new(toy_labels: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "empty").mkdir()
    argv = ["labels", "export", str(toy_labels), "-f", "coco", "--out", str(tmp_path / "empty")]
    assert _run(argv, capsys)[0] == 0
    assert json.loads((tmp_path / "empty" / "export.json").read_text())["images"] == 3
