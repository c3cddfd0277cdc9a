"""Source registry and spec parsing, Sample label loading, sharding, output names."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from zsplg_fast.data import SOURCES, DataSource, Sample, open_source, output_name, shard
from zsplg_fast.errors import ConfigError, LabelFormatError


def test_spec_errors() -> None:
    with pytest.raises(ConfigError, match="must be KIND:PATH"):
        open_source("just/a/path")
    with pytest.raises(ConfigError, match=r"unknown source kind 'vocc'.*coco, folder, synthetic, voc"):
        open_source("vocc:/data")
    assert set(SOURCES) >= {"voc", "coco", "folder", "synthetic"}


def test_registry_is_extensible(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def opener(arg: str, split: object = None, **_: object) -> DataSource:
        return DataSource("mine", Path(arg), [Sample("x", Path(arg) / "x.png")])

    monkeypatch.setitem(SOURCES, "mine", opener)
    src = open_source(f"mine:{tmp_path}")
    assert src.name == "mine" and src.samples[0].id == "x"


@pytest.mark.parametrize("n", [1, 2, 3, 7, 12])
def test_shard_disjoint_and_covering(n: int) -> None:
    items = [f"id{k}" for k in range(10)]
    shares = [shard(items, i, n) for i in range(n)]
    flat = [x for s in shares for x in s]
    assert sorted(flat) == sorted(items) and len(flat) == len(items)
    assert max(map(len, shares)) - min(map(len, shares)) <= 1
    assert shares[0][0] == "id0" and shard(items, 0, n) == shares[0]  # deterministic


@pytest.mark.parametrize(("i", "n"), [(2, 2), (-1, 3), (0, 0)])
def test_shard_bad_index(i: int, n: int) -> None:
    with pytest.raises(ConfigError, match="0 <= i < N"):
        shard([1, 2, 3], i, n)


def test_output_name_flat_safe_injective() -> None:
    ids = ["2007_000032", "a/b", "a%2Fb", "a_b", ".hidden", "sp ace", "ünï", "x" * 300, "x" * 299 + "y"]
    names = [output_name(i) for i in ids]
    assert names[0] == "2007_000032" and names[1] == "a%2Fb"
    assert len(set(names)) == len(names)
    for n in names:
        assert "/" not in n and not n.startswith(".") and len(n) <= 200 and n.isascii() and " " not in n


def test_sample_label_loader_checked(tmp_path: Path) -> None:
    lab = np.array([[0, 5]], np.uint8)
    s = Sample("x", tmp_path / "x.jpg", label_loader=lambda: lab)
    assert s.has_label and s.load_label().tolist() == [[0, 5]]
    with pytest.raises(LabelFormatError, match=r"offending values: \[5\]"):
        s.load_label(num_classes=3)
    assert not Sample("y", tmp_path / "y.jpg").has_label
