"""Fuzzed COCO instances JSON through ``data coco-masks`` and ``data check --data coco:DIR:ANN``."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from PIL import Image

from .conftest import budget, check_outcome, files_under, run_cli
from .strategies import HOSTILE, Path_, damaged, json_bytes, mutated

VALID: dict[str, Any] = {
    "images": [
        {"id": 1, "file_name": "a.jpg", "height": 10, "width": 12},
        {"id": 7, "file_name": "sub/b.jpg", "height": 9, "width": 8},
    ],
    "categories": [{"id": 1, "name": "cat"}, {"id": 3, "name": "dog"}, {"id": 90, "name": "toothbrush"}],
    "annotations": [
        {"id": 1, "image_id": 1, "category_id": 1, "segmentation": [[1, 1, 8, 1, 8, 7, 1, 7]], "iscrowd": 0},
        {"id": 2, "image_id": 1, "category_id": 3, "segmentation": [[2, 2, 5, 2, 5, 5]], "iscrowd": 0},
        {
            "id": 5,
            "image_id": 7,
            "category_id": 90,
            "segmentation": [[0, 0, 7, 0, 7, 8], [1, 1, 2, 1, 2, 2]],
            "iscrowd": 1,
            "area": 20.0,
            "bbox": [0, 0, 7, 8],
        },
    ],
}
VALUES = st.one_of(
    st.sampled_from(HOSTILE), st.lists(st.sampled_from([0, 1, 5.5, 1e9, -3, "7", None]), max_size=7)
)


def _not_rle(path: Path_, value: Any) -> bool:
    """A dict where a segmentation belongs is an RLE: a malformed RLE is counted and skipped by the
    "datasets" engineer's fix of issue 21 item 6, so this strategy leaves that branch out (no RLE here)."""
    in_segmentation = "segmentation" in path
    return not (in_segmentation and isinstance(value, dict))


DOCS = mutated(VALID, values=VALUES, keep=_not_rle).map(json_bytes).flatmap(damaged)


def _dataset(root: Path) -> None:
    for name, (h, w) in {"a.jpg": (10, 12), "sub/b.jpg": (9, 8)}.items():
        p = root / "val" / name
        p.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((h, w, 3), 100, np.uint8)).save(p)


@budget(100)
@given(doc=DOCS)
@example(doc=json_bytes({**VALID, "images": 5}))  # was TypeError: 'int' object is not iterable
@example(doc=json_bytes({**VALID, "images": [{**VALID["images"][0], "height": -3}]}))  # was numpy ValueError
# a polygon coordinate past the C int range segfaulted pycocotools' frPyObjects (the whole process died)
@example(
    doc=json_bytes(
        {**VALID, "annotations": [{**VALID["annotations"][0], "segmentation": [[0, 0, 1e300, 0, 4, 1e300]]}]}
    )
)
def test_coco_masks_never_tracebacks(doc: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        ann = root / "instances_val.json"
        ann.write_bytes(doc)
        before = files_under(root)
        res = run_cli(["data", "coco-masks", "--ann", str(ann), "--out", str(root / "out")])
        check_outcome(
            res, before, files_under(root), "out", explain=lambda: doc[:400].decode("utf-8", "replace")
        )
        if res.code == 0:
            summary = json.loads(res.out)
            masks = sorted((root / "out" / "masks" / "val").glob("*.png"))
            assert len(masks) == summary["images"]


@budget(50)
@given(doc=DOCS)
def test_data_check_on_coco_never_tracebacks(doc: bytes) -> None:
    """``data check`` generates every label from the JSON (the path label / train loading takes)."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        _dataset(root)
        (root / "instances_val.json").write_bytes(doc)
        before = files_under(root)
        res = run_cli(["data", "check", "--data", f"coco:{root}:instances_val.json"])
        # 1: the check ran and counted problems (a missing image, bad label values): its report, not an error
        check_outcome(
            res,
            before,
            files_under(root),
            None,
            allowed=(0, 1, 2),
            explain=lambda: doc[:400].decode("utf-8", "replace"),
        )
        if res.code == 1:
            assert "error:" not in res.err


def test_coco_masks_failing_mid_way_leaves_no_masks(tmp_path: Path) -> None:
    """A write that fails on the second mask (disk full) removed nothing before: the first mask stayed, and
    a rerun then refused the folder ("1 mask(s) already exist")."""
    from unittest import mock

    from zsplg_fast.data import coco

    ann = tmp_path / "instances_val.json"
    ann.write_text(json.dumps({**VALID, "annotations": []}))
    real, calls = coco.write_label, []

    def disk_full_on_second(path: Path, label: np.ndarray, *rest: Any) -> None:
        calls.append(path)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        real(path, label, *rest)

    with mock.patch.object(coco, "write_label", disk_full_on_second), pytest.raises(OSError):
        coco.convert_coco(ann, tmp_path / "out")
    assert len(calls) == 2
    assert [p for p in (tmp_path / "out").rglob("*")] == []
