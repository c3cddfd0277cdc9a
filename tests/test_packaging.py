"""Install output: pyproject metadata that setuptools takes without a deprecation warning."""

from __future__ import annotations

from pathlib import Path

import pytest


def test_license_is_an_spdx_string_with_a_backend_that_reads_it() -> None:
    tomllib = pytest.importorskip("tomllib", reason="tomllib is in the standard library from Python 3.11")
    meta = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())
    assert meta["project"]["license"] == "Apache-2.0"  # a TOML table is deprecated by setuptools >= 77
    assert "setuptools>=77" in meta["build-system"]["requires"]
    classifiers = meta["project"].get("classifiers", [])
    assert not [c for c in classifiers if c.startswith("License ::")]  # setuptools refuses both
