"""Atomic writes publish files with the permissions the process umask asks for, read at write time."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from zsplg_fast.utils.io import atomic_write_json, current_umask


def test_atomic_write_follows_the_current_umask(tmp_path: Path) -> None:
    old = os.umask(0o027)
    try:
        assert current_umask() == 0o027 and os.umask(0o027) == 0o027  # reading did not change it
        atomic_write_json(tmp_path / "a.json", {"x": 1})
        os.umask(0o022)
        atomic_write_json(tmp_path / "b.json", {"x": 2})
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "a.json").stat().st_mode) == 0o640
    assert stat.S_IMODE((tmp_path / "b.json").stat().st_mode) == 0o644
    assert not list(tmp_path.glob(".*.tmp"))
