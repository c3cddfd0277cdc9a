"""Output folders: a command writes only into folders carrying its own marker, never over the user's
files; unwritable places are refused before anything runs, as one-line OutputWriteErrors."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path
from types import SimpleNamespace

import pytest

from zsplg_fast.errors import OutputExistsError, OutputWriteError
from zsplg_fast.utils import outdir
from zsplg_fast.utils.io import atomic_write_bytes
from zsplg_fast.utils.outdir import (
    MARKER,
    check_output,
    check_replaceable,
    claim_output,
    read_marker,
    refuse_foreign_file,
)


def _user_folder(root: Path) -> Path:
    root.mkdir(parents=True)
    (root / "notes.txt").write_text("mine")
    (root / "sub").mkdir()
    (root / "sub" / "data.txt").write_text("also mine")
    return root


def test_new_folder_is_claimed_with_its_marker_and_reused(tmp_path: Path) -> None:
    out = tmp_path / "a" / "b"
    assert check_output(out, "label") is False and not out.exists()  # checking writes nothing
    assert claim_output(out, "label") is False
    marker = read_marker(out)
    assert marker is not None and marker["command"] == "label" and marker["version"]
    (out / "labels").mkdir()
    assert claim_output(out, "label") is True  # ours: a rerun resumes
    empty = tmp_path / "empty"
    empty.mkdir()
    assert claim_output(empty, "train") is False and read_marker(empty)["command"] == "train"


def test_user_folder_and_other_commands_folder_are_refused(tmp_path: Path) -> None:
    user = _user_folder(tmp_path / "user")
    with pytest.raises(OutputExistsError, match=r"'notes.txt', 'sub/' \(2 entries\)") as err:
        claim_output(user, "label")
    assert "\n" not in str(err.value)
    assert sorted(p.name for p in user.iterdir()) == ["notes.txt", "sub"]  # no marker written
    claim_output(tmp_path / "lab", "label")
    with pytest.raises(OutputExistsError, match="made by `zsplg-fast label`"):
        check_output(tmp_path / "lab", "train")
    legacy = tmp_path / "old"
    legacy.mkdir()
    (legacy / "manifest.json").write_text("{}")
    assert claim_output(legacy, "label", legacy=("manifest.json",)) is True  # made before markers
    assert read_marker(legacy)["command"] == "label"
    from zsplg_fast.labeling.outputs import LEGACY

    mine = _user_folder(tmp_path / "mine")
    (mine / "manifest.json").write_text('{"my": "packing list"}')  # a user's file of that name
    with pytest.raises(OutputExistsError, match="not made by"):
        check_output(mine, "label", legacy=LEGACY)
    (mine / "manifest.json").write_text('{"version": 1, "fingerprint": "abc"}')  # an old label run
    assert check_output(mine, "label", legacy=LEGACY) is True


def test_force_replaces_only_a_folder_of_the_same_command(tmp_path: Path) -> None:
    user = _user_folder(tmp_path / "user")
    for force in (False, True):
        with pytest.raises(OutputExistsError, match="not made by"):
            check_replaceable(user, "deploy", force)
    assert check_replaceable(tmp_path / "new", "deploy", False) is False
    claim_output(tmp_path / "dep", "deploy")
    (tmp_path / "dep" / "model.onnx").write_text("x")
    with pytest.raises(OutputExistsError, match="--force"):
        check_replaceable(tmp_path / "dep", "deploy", False)
    assert check_replaceable(tmp_path / "dep", "deploy", True) is True


def test_shared_artifact_folder_never_replaces_a_file_not_ours(tmp_path: Path) -> None:
    onnx, side = tmp_path / "m.onnx", tmp_path / "m.json"
    refuse_foreign_file((onnx, side), side, False)  # new names: fine
    onnx.write_text("user model")
    for force in (False, True):
        with pytest.raises(OutputExistsError, match="not written by zsplg-fast"):
            refuse_foreign_file((onnx, side), side, force)
    side.write_text(json.dumps({"notes": "the user's own json"}))
    with pytest.raises(OutputExistsError, match="not written by zsplg-fast"):
        refuse_foreign_file((onnx, side), side, True)
    side.write_text(json.dumps({"sidecar_version": 1, "kind": "onnx"}))
    with pytest.raises(OutputExistsError, match="pass --force"):
        refuse_foreign_file((onnx, side), side, False)
    refuse_foreign_file((onnx, side), side, True)  # ours, and forced: may be replaced


def test_a_file_as_out_is_one_line_not_a_directory(tmp_path: Path) -> None:
    f = tmp_path / "file.txt"
    f.write_text("mine")
    for path in (f, f / "sub"):
        with pytest.raises(OutputWriteError) as err:
            check_output(path, "label")
        assert err.value.errno == errno.ENOTDIR and isinstance(err.value, OSError)
        assert str(err.value).startswith(str(f)) and "Not a directory" in str(err.value)
        assert "\n" not in str(err.value) and err.value.exit_code == 1
    assert f.read_text() == "mine"


@pytest.mark.parametrize(
    ("code", "patch"),
    [
        (errno.EROFS, "statvfs_ro"),
        (errno.EACCES, "access"),
        (errno.ENOSPC, "statvfs_full"),
    ],
)
def test_unwritable_places_are_refused_before_any_write(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, code: int, patch: str
) -> None:
    # root ignores permission bits, so the filesystem's answers are simulated
    real = os.statvfs(tmp_path)
    fields = {k: getattr(real, k) for k in ("f_flag", "f_bfree", "f_bavail")}
    if patch == "statvfs_ro":
        fields["f_flag"] |= os.ST_RDONLY
    if patch == "statvfs_full":
        fields["f_bfree"] = fields["f_bavail"] = 0
    monkeypatch.setattr(outdir.os, "statvfs", lambda p: SimpleNamespace(**fields))
    if patch == "access":
        monkeypatch.setattr(outdir.os, "access", lambda p, mode: False)
    with pytest.raises(OutputWriteError) as err:
        claim_output(tmp_path / "out", "label")
    assert err.value.errno == code and os.strerror(code) in str(err.value)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EROFS, errno.EACCES])
def test_atomic_writer_failure_is_one_line_naming_the_file_and_leaves_no_temp(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, code: int
) -> None:
    def full(fd: int) -> None:
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr("zsplg_fast.utils.io.os.fsync", full)
    with pytest.raises(OutputWriteError) as err:
        atomic_write_bytes(tmp_path / "x" / "a.png", b"data")
    assert str(err.value) == f"{tmp_path / 'x' / 'a.png'}: cannot write: {os.strerror(code)} [errno {code}]"
    assert list((tmp_path / "x").iterdir()) == []  # no temp file left
    assert MARKER.startswith(".")  # the marker is hidden, like the temp files
