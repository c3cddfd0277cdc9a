"""Fuzzed YAML configs and ``--set`` strings through ``zsplg-fast config show`` (every command's loader)."""

from __future__ import annotations

import tempfile
from pathlib import Path

import yaml
from hypothesis import example, given
from hypothesis import strategies as st

from .conftest import budget, check_outcome, files_under, run_cli
from .strategies import damaged, mutated

CONFIGS = Path(__file__).parents[2] / "zsplg_fast" / "configs"
BASE = yaml.safe_load((CONFIGS / "toy_ci.yaml").read_text())

# raw YAML that the loader must refuse or read: tags, anchors, aliases, tabs, deep nesting, odd scalars
RAW = st.sampled_from(
    [
        "amg: !!python/object:os.system x\n",
        "amg: &a {points_per_side: 8}\nsam: *a\n",
        "a: &a [1, 1, 1, 1, 1, 1, 1, 1]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a]\n"
        "c: &c [*b, *b, *b, *b, *b, *b, *b, *b]\nd: &d [*c, *c, *c, *c, *c, *c, *c, *c]\n"
        "train: {x: [*d, *d, *d, *d, *d, *d, *d, *d]}\n",
        "amg:\n\tpoints_per_side: 8\n",
        "amg: " + "[" * 3000 + "]" * 3000 + "\n",
        "amg: {points_per_side: 0x10}\n",
        "amg: {pred_iou_thresh: .nan}\n",
        "amg: {pred_iou_thresh: .inf}\n",
        "? [a, b]\n: 1\n",
        "1: 2\n",
        "null: 1\n",
        "amg: {points_per_side: 2020-01-01}\n",
        "label: {shard: '１/２'}\n",
        "- a\n- b\n",
        "just text\n",
        "",
        "---\n---\n",
        "amg: {points_per_side: 8}\n...\nnot: yaml: here\n",
    ]
)
KEYS = st.sampled_from(
    [
        "amg.points_per_side",
        "amg.pred_iou_thresh",
        "label.shard",
        "train.data.scale_range",
        "amg",
        "",
        "amg..x",
        "clip.model",
        "sam.variant",
        "bench.image_size",
        "export.profiles",
        "no.such.key",
        "ü.名",
    ]
)
VALUES = st.sampled_from(
    [
        "8",
        "0.5",
        "-1",
        "1e999",
        ".nan",
        "null",
        "[1",
        "{a: 1",
        "!!python/name:os.system",
        "[0.5, 2.0]",
        "0/4",
        "99/4",
        "x" * 200,
        "'",
        '"\\u0000"',
        "[[[[[[[[]]]]]]]]",
        "&a [*a]",
        "toy",
        "vit_b",
        "1x1",
    ]
)
SETS = st.lists(
    st.one_of(st.builds(lambda k, v: f"{k}={v}", KEYS, VALUES), st.sampled_from(["noequals", "="])),
    max_size=3,
)
YAML_TEXT = st.one_of(
    mutated(BASE).map(lambda d: yaml.safe_dump(d, allow_unicode=True).encode()).flatmap(damaged),
    RAW.map(str.encode),
)


@budget(100)
@given(text=YAML_TEXT, sets=SETS)
@example(text=b"amg:\n  points_per_side: \xff\n", sets=[])  # not UTF-8: was a UnicodeDecodeError traceback
@example(text=b"", sets=["amg.points_per_side=[1"])  # bad --set YAML: was a yaml ParserError traceback
@example(text=b"amg: " + b"[" * 3000 + b"]" * 3000, sets=[])  # was a RecursionError traceback
def test_config_show_never_tracebacks(text: bytes, sets: list[str]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        cfg = root / "cfg.yaml"
        cfg.write_bytes(text)
        before = files_under(root)
        res = run_cli(["config", "show", "--config", str(cfg), *(a for s in sets for a in ("--set", s))])
        check_outcome(res, before, files_under(root), None, explain=lambda: f"{text[:300]!r} {sets}")


def test_nan_and_alias_bombs_are_config_errors(tmp_path: Path) -> None:
    """.nan passed every range check (accepted as a threshold); an alias bomb was expanded in memory."""
    res = run_cli(["config", "show", "--set", "amg.pred_iou_thresh=.nan"])
    assert res.code == 2 and "amg.pred_iou_thresh" in res.err and "finite" in res.err
    bomb = tmp_path / "bomb.yaml"
    levels = ["a: &a [1, 1, 1, 1, 1, 1, 1, 1, 1, 1]"]
    for i in range(1, 9):  # 10**9 values once expanded
        prev, name = chr(ord("a") + i - 1), chr(ord("a") + i)
        levels.append(f"{name}: &{name} [{', '.join([f'*{prev}'] * 10)}]")
    bomb.write_text("train:\n  x:\n" + "".join(f"    {ln}\n" for ln in levels))
    res = run_cli(["config", "show", "--config", str(bomb)])
    assert res.code == 2 and "bomb.yaml" in res.err and "aliases" in res.err
