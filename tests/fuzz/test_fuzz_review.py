"""Fuzzed review-tool imports through ``labels import``: COCO JSON, Label Studio JSON, CVAT zip."""

from __future__ import annotations

import io
import json
import shutil
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from zsplg_fast.data import write_label

from .conftest import budget, check_outcome, files_under, run_cli
from .strategies import HOSTILE, MEMBER_NAMES, damaged, json_bytes, mutated, png_files

pytest.importorskip("label_studio_converter", reason="label-studio-converter: the [review] extra")


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A small label folder written by hand (2 images, 3 classes) and its COCO, Label Studio and CVAT
    exports, read back into memory."""
    root = tmp_path_factory.mktemp("review-fuzz")
    folder = root / "labels"
    (folder / "labels").mkdir(parents=True)
    (folder / "meta").mkdir()
    manifest = {"classes": ["background", "cat", "dog"], "config": {"classify": {"uncovered": "background"}}}
    (folder / "manifest.json").write_text(json.dumps(manifest))
    for i in range(2):
        lab = np.zeros((6, 8), np.uint8)
        lab[1:4, 1 + i : 5] = 1 + i
        lab[5, :2] = 255
        write_label(folder / "labels" / f"im{i}.png", lab)
        meta = {"image": f"/data/im{i}.jpg", "masks": [_mask(lab == 1 + i, 1 + i)], "uncovered_fraction": 0.0}
        (folder / "meta" / f"im{i}.json").write_text(json.dumps(meta))
    for fmt in ("coco", "labelstudio", "cvat"):
        res = run_cli(["labels", "export", str(folder), "--format", fmt, "--out", str(root / fmt)])
        assert res.code == 0, res.err
    with zipfile.ZipFile(root / "cvat" / "segmentation_mask.zip") as zf:
        members = {n: zf.read(n) for n in zf.namelist()}
    return {
        "folder": folder,
        "coco": json.loads((root / "coco" / "instances.json").read_text()),
        "labelstudio": json.loads((root / "labelstudio" / "tasks.json").read_text()),
        "cvat": members,
    }


def _mask(m: np.ndarray, cls: int) -> dict[str, Any]:
    """A meta record of one SAM mask, as ``label`` writes it (class, score, margin, area, COCO RLE)."""
    from pycocotools import mask as mask_utils

    rle = mask_utils.encode(np.asfortranarray(m.astype(np.uint8)))
    rle_json = {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode()}
    return {"class": cls, "score": 0.9, "margin": 0.2, "area": int(m.sum()), "rle": rle_json}


def _import(exported: dict[str, Any], fmt: str, name: str, data: bytes, classes: str | None = None) -> None:
    """Write ``data`` as the source file in a fresh folder, run ``labels import``, check the property."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        src = root / name
        src.write_bytes(data)
        before = files_under(root)
        args = ["labels", "import", str(src), "-f", fmt, "--classes", classes or str(exported["folder"])]
        res = run_cli([*args, "--out", str(root / "out")])
        check_outcome(
            res, before, files_under(root), "out", explain=lambda: f"{fmt} source of {len(data)} bytes"
        )
        if res.code == 0:
            written = sorted((root / "out" / "labels").rglob("*.png"))
            assert written and (root / "out" / "manifest.json").is_file()


VALUES = st.one_of(
    st.sampled_from(HOSTILE), st.lists(st.sampled_from([0, 3, 255, 256, -1, 1e9, "a"]), max_size=8)
)


@budget(100)
@given(data=st.data())
@example(data=None)
def test_coco_import_never_tracebacks(exported: dict[str, Any], data: st.DataObject | None) -> None:
    doc = exported["coco"]
    if data is None:  # the explicit example: a compressed RLE that does not decode (was a ValueError)
        doc = json.loads(json.dumps(doc))
        doc["annotations"][0]["segmentation"]["counts"] = "zzzz"
        blob = json_bytes(doc)
    else:
        blob = data.draw(mutated(doc, values=VALUES).map(json_bytes).flatmap(damaged))
    _import(exported, "coco", "instances.json", blob)


@budget(100)
@given(data=st.data())
@example(data=None)
def test_labelstudio_import_never_tracebacks(exported: dict[str, Any], data: st.DataObject | None) -> None:
    tasks = exported["labelstudio"]
    if data is None:  # the explicit example: 'original_height' missing (was a KeyError traceback)
        tasks = json.loads(json.dumps(tasks))
        tasks[0]["predictions"][0]["result"][0].pop("original_height")
        blob = json_bytes(tasks)
    else:
        blob = data.draw(mutated(tasks, values=VALUES).map(json_bytes).flatmap(damaged))
    _import(exported, "labelstudio", "tasks.json", blob)


def _zip(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, blob in members.items():
            zf.writestr(name, blob)
    return buf.getvalue()


LABELMAP_EDITS = st.sampled_from(
    [
        b"",
        b"\xff\xfe",
        b"cat:1,2::\n",
        b"cat:999,-1,0::\n",
        b"dog:0,128,0::\nextra:9,9,9::\n",
        b"::::\n",
        b"background:0,0,0::\ncat:128,0,0::\ndog:0,128,0::\ncat:128,0,0::\n",
        b"# only a comment\n",
    ]
)


@budget(100)
@given(data=st.data())
@example(data=None)
def test_cvat_import_never_tracebacks(exported: dict[str, Any], data: st.DataObject | None) -> None:
    members = dict(exported["cvat"])
    if data is None:  # the explicit example: a member that is both a file and a folder (was an OSError)
        members["SegmentationClass/im0.png/x.png"] = members["SegmentationClass/im0.png"]
    else:
        for _ in range(data.draw(st.integers(0, 3))):
            how = data.draw(st.sampled_from(["png", "name", "labelmap", "drop"]))
            if how == "png":
                target = data.draw(
                    st.sampled_from(sorted(n for n in members if n.endswith(".png")) or ["x.png"])
                )
                members[target] = data.draw(png_files(max_side=8))
            elif how == "name":
                members[data.draw(MEMBER_NAMES)] = data.draw(
                    st.sampled_from([*members.values(), b"", b"\0" * 10])
                )
            elif how == "labelmap":
                members["labelmap.txt"] = data.draw(LABELMAP_EDITS)
            elif members:
                members.pop(data.draw(st.sampled_from(sorted(members))))
    blob = _zip(members)
    if data is not None:
        blob = data.draw(damaged(blob))
    _import(exported, "cvat", "segmentation_mask.zip", blob)


def test_import_with_a_class_list_and_no_folder(exported: dict[str, Any]) -> None:
    """Without a label folder the importers check class order; an image with no shapes has no size."""
    _import(exported, "coco", "instances.json", json_bytes(exported["coco"]), classes="background,cat,dog")


@budget(60)
@given(data=st.data())
@example(data=None)
def test_label_folder_never_tracebacks(exported: dict[str, Any], data: st.DataObject | None) -> None:
    """A label folder with a fuzzed manifest or meta JSON, read by ``labels export`` and as the
    ``--classes`` of ``labels import``."""
    src = exported["folder"]
    if data is None:  # explicit example: a mask record without 'class' (KeyError, found by a deep run)
        which, fmt = "meta/im0.json", "coco"
        doc = json.loads((src / which).read_text())
        doc["masks"][0].pop("class")
        blob = json_bytes(doc)
    else:
        which = data.draw(st.sampled_from(["manifest.json", "meta/im0.json"]))
        doc = json.loads((src / which).read_text())
        blob = data.draw(mutated(doc, values=VALUES).map(json_bytes).flatmap(damaged))
        fmt = data.draw(st.sampled_from(["coco", "cvat", "labelstudio"]))
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        folder = root / "labels"
        shutil.copytree(src, folder)
        (folder / which).write_bytes(blob)
        before = files_under(root)
        res = run_cli(["labels", "export", str(folder), "-f", fmt, "--out", str(root / "exp")])
        check_outcome(res, before, files_under(root), "exp", explain=lambda: f"{which}: {blob[:300]!r}")
        coco = root / "instances.json"
        coco.write_bytes(json_bytes(exported["coco"]))
        before = files_under(root)
        res = run_cli(
            [
                "labels",
                "import",
                str(coco),
                "-f",
                "coco",
                "--classes",
                str(folder),
                "--out",
                str(root / "imp"),
            ]
        )
        check_outcome(res, before, files_under(root), "imp", explain=lambda: f"{which}: {blob[:300]!r}")
