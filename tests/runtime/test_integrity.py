"""zsplg_runtime.integrity: an artifact file is what its sidecar records (size, sha256), or it is refused; the
hash of an unchanged large file is computed once (memory, then a JSON cache that is safe to lose)."""

from __future__ import annotations

import ast
import hashlib
import json
import os
import time
from pathlib import Path

import pytest
from zsplg_runtime import integrity
from zsplg_runtime.integrity import ArtifactIntegrityError


@pytest.fixture
def counted(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> list[str]:
    """Every file read in full by the hasher; a fresh cache folder, every file cached on disk."""
    calls: list[str] = []
    real = integrity._hash_file

    def hash_file(path: Path) -> str:
        calls.append(Path(path).name)
        return real(path)

    monkeypatch.setattr(integrity, "_hash_file", hash_file)
    monkeypatch.setattr(integrity, "_memo", {})
    monkeypatch.setattr(integrity, "CACHE_MIN_BYTES", 0)
    monkeypatch.setenv("ZSPLG_FAST_CACHE_DIR", str(tmp_path / "cache"))
    return calls


def _artifact(folder: Path, payload: bytes = b"model bytes " * 100) -> tuple[Path, dict]:
    folder.mkdir(parents=True, exist_ok=True)
    model = folder / "m.onnx"
    model.write_bytes(payload)
    return model, {"sidecar_version": 1, "files": integrity.file_records([model])}


def test_records_are_the_files_sha256_and_size(tmp_path: Path) -> None:
    model, side = _artifact(tmp_path)
    assert side["files"] == {
        "m.onnx": {"bytes": model.stat().st_size, "sha256": hashlib.sha256(model.read_bytes()).hexdigest()}
    }
    assert integrity.verify_artifact(model, side)["status"] == "verified"


def test_a_swapped_file_of_the_same_size_is_refused_naming_both_hashes(tmp_path: Path) -> None:
    model, side = _artifact(tmp_path)
    data = bytearray(model.read_bytes())
    data[5] ^= 1  # same size, other content (another run's weights)
    model.write_bytes(bytes(data))
    with pytest.raises(ArtifactIntegrityError) as err:
        integrity.verify_artifact(model, side)
    msg = str(err.value)
    assert "\n" not in msg and str(model) in msg and "export it again" in msg
    assert side["files"]["m.onnx"]["sha256"] in msg and hashlib.sha256(data).hexdigest() in msg
    assert err.value.exit_code == 2


def test_other_size_missing_data_file_renamed_copy_and_foreign_sidecar(tmp_path: Path) -> None:
    model, side = _artifact(tmp_path)
    model.write_bytes(b"another model")
    with pytest.raises(ArtifactIntegrityError, match=r"13 bytes, expected 1200"):
        integrity.verify_artifact(model, side)
    data = tmp_path / "m.onnx.data"
    data.write_bytes(b"weights")
    model2, side2 = _artifact(tmp_path / "two")
    side2["files"].update(integrity.file_records([data], ["m.onnx.data"]))
    with pytest.raises(ArtifactIntegrityError, match=r"m\.onnx\.data.*no such file"):
        integrity.verify_artifact(model2, side2)
    copy = tmp_path / "copy.onnx"  # the model copied under another name with its sidecar: still valid
    copy.write_bytes(model2.read_bytes())
    assert integrity.verify_artifact(copy, side)["status"] == "verified"
    other = tmp_path / "two" / "x.onnx"
    other.write_bytes(b"x")
    with pytest.raises(ArtifactIntegrityError, match=r"x\.onnx.*1 bytes, expected 1200"):
        integrity.verify_artifact(other, side2)
    with pytest.raises(ArtifactIntegrityError, match="malformed"):  # never a path outside the folder
        integrity.verify_artifact(model2, {"files": {"m.onnx": side2["files"]["m.onnx"], "../x": {}}})


def test_legacy_sidecars_plan_rebuild_hint_and_unrecorded(tmp_path: Path) -> None:
    model, side = _artifact(tmp_path)
    rec = side["files"]["m.onnx"]
    legacy = {"sha256": integrity.combined_sha256([rec["sha256"]]), "size_bytes": rec["bytes"]}
    assert integrity.verify_artifact(model, legacy)["status"] == "verified"
    plan = {"size_bytes": rec["bytes"], "rebuild_command": "zsplg-fast build export/m.onnx --force"}
    assert integrity.verify_artifact(model, plan)["status"] == "size only"
    assert integrity.verify_artifact(model, {"sidecar_version": 1})["status"] == "not recorded"
    model.write_bytes(b"shorter")
    with pytest.raises(ArtifactIntegrityError, match="over the files' sha256s"):
        integrity.verify_artifact(model, legacy)
    with pytest.raises(ArtifactIntegrityError, match=r"build it again: zsplg-fast build export/m\.onnx"):
        integrity.verify_artifact(model, plan)


def test_a_verified_hash_is_cached_across_processes_and_a_change_rehashes(
    tmp_path: Path, counted: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    model, side = _artifact(tmp_path / "a")
    assert counted == ["m.onnx"]  # the writer hashed it once
    for _ in range(3):
        assert integrity.verify_artifact(model, side)["hashed"] == []
    assert counted == ["m.onnx"]
    monkeypatch.setattr(integrity, "_memo", {})  # a new process: the JSON cache answers
    assert integrity.verify_artifact(model, side)["hashed"] == []
    assert counted == ["m.onnx"]
    cache = tmp_path / "cache" / integrity.CACHE_FILE
    assert (
        json.loads(cache.read_text())["entries"][os.path.realpath(model)]["sha256"]
        == (side["files"]["m.onnx"]["sha256"])
    )
    # same bytes, size and mtime put back (cp -p / touch -r): the ctime moved, so it is hashed again
    st = model.stat()
    time.sleep(0.05)  # past the kernel's coarse timestamp tick
    data = bytearray(model.read_bytes())
    data[0] ^= 1
    model.write_bytes(bytes(data))
    os.utime(model, ns=(st.st_atime_ns, st.st_mtime_ns))
    with pytest.raises(ArtifactIntegrityError):
        integrity.verify_artifact(model, side)
    assert counted == ["m.onnx", "m.onnx"]


def test_a_lost_or_corrupt_cache_only_means_hashing_again(
    tmp_path: Path, counted: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    model, side = _artifact(tmp_path / "a")
    cache = tmp_path / "cache" / integrity.CACHE_FILE
    cache.write_text("{not json")
    monkeypatch.setattr(integrity, "_memo", {})
    assert integrity.verify_artifact(model, side)["hashed"] == ["m.onnx"]
    assert json.loads(cache.read_text())["version"] == integrity.CACHE_VERSION  # rewritten whole
    assert not [p for p in cache.parent.iterdir() if p.name.endswith(".tmp")]
    monkeypatch.setenv("ZSPLG_FAST_CACHE_DIR", str(model))  # not a folder: no cache, still verified
    monkeypatch.setattr(integrity, "_memo", {})
    assert integrity.verify_artifact(model, side)["status"] == "verified"


def test_small_files_stay_out_of_the_disk_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ZSPLG_FAST_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(integrity, "_memo", {})
    model, side = _artifact(tmp_path / "a")
    integrity.verify_artifact(model, side)
    assert not (tmp_path / "cache").exists()


def test_the_module_imports_only_the_standard_library() -> None:
    """The torch-free runtime carries it: the standard library and the runtime's own error base only."""
    import sys

    tree = ast.parse(Path(integrity.__file__).read_text())
    names = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    names |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    assert names <= set(sys.stdlib_module_names) | {"__future__", "zsplg_runtime"}, names
