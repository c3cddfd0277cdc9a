"""Every export read back with the tool's own library (datumaro, pycocotools, Label Studio's converter,
FiftyOne's documented layout) and our own importer: the pixels equal the label PNGs."""

from __future__ import annotations

import json
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from zsplg_fast.data import read_label
from zsplg_fast.review.formats.yolo import draw_polygons, mask_polygons
from zsplg_fast.review.run import export_labels, import_labels


def _labels(folder: Path) -> dict[str, np.ndarray]:
    return {p.stem: read_label(p) for p in sorted((folder / "labels").glob("*.png"))}


def _round_trip(fmt: str, src: Path, labels: Path, tmp_path: Path) -> None:
    out = tmp_path / f"back-{fmt}"
    import_labels(fmt, src, str(labels), out)
    want, got = _labels(labels), _labels(out)
    assert want.keys() == got.keys()
    for k in want:
        np.testing.assert_array_equal(got[k], want[k], err_msg=f"{fmt} {k}")


def test_cvat_archive_round_trip(toy_labels: Path, tmp_path: Path) -> None:
    s = export_labels(toy_labels, "cvat", tmp_path / "cvat")
    zf = zipfile.ZipFile(tmp_path / "cvat" / "segmentation_mask.zip")
    names = set(zf.namelist())
    assert {"labelmap.txt", "ImageSets/Segmentation/default.txt"} <= names
    assert s["object_maps"] == 3 and sum(n.startswith("SegmentationObject/") for n in names) == 3
    labelmap = zf.read("labelmap.txt").decode().splitlines()
    assert labelmap[1] == "background:0,0,0::" and labelmap[-1] == "ignore:224,224,192::"
    _round_trip("cvat", tmp_path / "cvat" / "segmentation_mask.zip", toy_labels, tmp_path)


def test_cvat_archive_read_by_datumaro(toy_labels: Path, tmp_path: Path) -> None:
    pytest.importorskip("datumaro", reason="datumaro (CVAT's dataset library) is in the [review] extra")
    from datumaro.components.annotation import AnnotationType
    from datumaro.components.dataset import Dataset

    export_labels(toy_labels, "cvat", tmp_path / "cvat")
    with zipfile.ZipFile(tmp_path / "cvat" / "segmentation_mask.zip") as zf:
        zf.extractall(tmp_path / "x")
    ds = Dataset.import_from(str(tmp_path / "x"), "voc_segmentation")
    names = [c.name for c in ds.categories()[AnnotationType.label].items]
    want = _labels(toy_labels)
    assert sorted(item.id for item in ds) == sorted(want)
    for item in ds:
        got = np.zeros_like(want[item.id])
        for a in item.annotations:
            if a.type == AnnotationType.mask:
                got[a.image.astype(bool)] = 255 if names[a.label] == "ignore" else a.label
        np.testing.assert_array_equal(got, want[item.id])
    # datumaro writes the layout back (CVAT exports through it): our importer reads that exactly too
    ds.export(str(tmp_path / "dm"), "voc_segmentation", save_media=False)
    _round_trip("cvat", tmp_path / "dm", toy_labels, tmp_path)


def test_labelstudio_rle_decodes_with_label_studio(toy_labels: Path, tmp_path: Path) -> None:
    brush = pytest.importorskip(
        "label_studio_converter.brush", reason="label-studio-converter: [review] extra"
    )
    export_labels(toy_labels, "labelstudio", tmp_path / "ls", image_prefix="/data/local-files/?d=toy/")
    tasks = json.loads((tmp_path / "ls" / "tasks.json").read_text())
    want = _labels(toy_labels)
    assert len(tasks) == 3
    for t in tasks:
        assert t["data"]["image"].startswith("/data/local-files/?d=toy/unlabeled_")
        pred = t["predictions"][0]
        assert pred["model_version"] == "zsplg-fast" and 0 <= pred["score"] <= 1
        ref = want[t["data"]["zsplg_id"]]
        got = np.zeros_like(ref)
        for r in pred["result"]:
            assert r["type"] == "brushlabels" and r["value"]["format"] == "rle"
            layer = brush.decode_rle(r["value"]["rle"]).reshape(ref.shape[0], ref.shape[1], 4)[:, :, 3]
            cls = json.loads((toy_labels / "manifest.json").read_text())["classes"].index(
                r["value"]["brushlabels"][0]
            )
            got[layer > 0] = cls
        np.testing.assert_array_equal(got, ref)
    assert "<BrushLabels" in (tmp_path / "ls" / "label_config.xml").read_text()
    _round_trip("labelstudio", tmp_path / "ls" / "tasks.json", toy_labels, tmp_path)


def test_coco_loads_scores_and_round_trips(toy_labels: Path, tmp_path: Path) -> None:
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    export_labels(toy_labels, "coco", tmp_path / "coco")
    gt = COCO(str(tmp_path / "coco" / "instances.json"))
    anns = gt.loadAnns(gt.getAnnIds())
    assert anns and all(0 <= a["score"] <= 1 for a in anns)
    want = _labels(toy_labels)
    for img in gt.loadImgs(gt.getImgIds()):
        got = np.zeros((img["height"], img["width"]), np.uint8)
        for a in gt.loadAnns(gt.getAnnIds(imgIds=img["id"])):
            got[gt.annToMask(a) > 0] = a["category_id"]
        np.testing.assert_array_equal(got, want[Path(img["file_name"]).stem])
    dt = gt.loadRes([{k: a[k] for k in ("image_id", "category_id", "segmentation", "score")} for a in anns])
    ev = COCOeval(gt, dt, "segm")
    ev.evaluate()
    ev.accumulate()
    ev.summarize()
    assert ev.stats[0] > 0.99  # the labels scored against themselves: AP = 1
    _round_trip("coco", tmp_path / "coco" / "instances.json", toy_labels, tmp_path)


def test_coco_scored_against_ground_truth(toy_world: Path, toy_labels: Path, tmp_path: Path) -> None:
    """COCOeval scores the zero-shot instances against the toy world's truth (a COCO file made from the
    ground-truth PNGs: one instance per connected region of a class)."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    truth = tmp_path / "truth"
    shutil.copytree(toy_labels, truth, ignore=shutil.ignore_patterns("*.png"))
    for p in (toy_labels / "labels").glob("*.png"):
        shutil.copy(toy_world / "SegmentationClass" / p.name, truth / "labels" / p.name)
    for p in (truth / "meta").glob("*.json"):
        p.write_text(json.dumps({k: v for k, v in json.loads(p.read_text()).items() if k != "masks"}))
    export_labels(truth, "coco", tmp_path / "gt")
    export_labels(toy_labels, "coco", tmp_path / "dt")
    gt = COCO(str(tmp_path / "gt" / "instances.json"))
    dts = json.loads((tmp_path / "dt" / "instances.json").read_text())
    assert [i["file_name"] for i in dts["images"]] == [i["file_name"] for i in gt.dataset["images"]]
    ev = COCOeval(gt, gt.loadRes(dts["annotations"]), "segm")
    ev.evaluate()
    ev.accumulate()
    ev.summarize()
    assert 0.3 < ev.stats[1] < 1.0  # AP@0.5: good zero-shot masks on the toy world, not a copy of it


def test_fiftyone_directory_layout(toy_labels: Path, tmp_path: Path) -> None:
    export_labels(toy_labels, "fiftyone", tmp_path / "fo")
    targets = json.loads((tmp_path / "fo" / "mask_targets.json").read_text())
    assert targets["0"] == "background" and targets["255"] == "ignore"
    for k, ref in _labels(toy_labels).items():
        with Image.open(tmp_path / "fo" / "labels" / f"{k}.png") as im:
            assert im.mode == "L"
            np.testing.assert_array_equal(np.asarray(im), ref)
        assert (tmp_path / "fo" / "data" / f"{k}.jpg").is_file()


def test_fiftyone_reads_the_directory(
    toy_labels: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """FiftyOne's own importer (no database needed to iterate it; its MongoDB does not start here)."""
    monkeypatch.setenv("FIFTYONE_DO_NOT_TRACK", "true")
    foud = pytest.importorskip("fiftyone.utils.data", reason="fiftyone is optional (extra [fiftyone]), heavy")
    export_labels(toy_labels, "fiftyone", tmp_path / "fo")
    want = _labels(toy_labels)
    seen = set()
    with foud.ImageSegmentationDirectoryImporter(str(tmp_path / "fo"), force_grayscale=False) as imp:
        for path, _, label in imp:
            stem = Path(path).stem
            np.testing.assert_array_equal(label.get_mask(), want[stem])
            seen.add(stem)
    assert seen == set(want)


def test_yolo_polygons_keep_holes_and_parts(toy_labels: Path, tmp_path: Path) -> None:
    ring = np.zeros((40, 60), bool)
    ring[5:35, 5:35] = True
    ring[12:28, 12:28] = False  # a hole
    ring[10:20, 45:55] = True  # a second part
    rings = mask_polygons(ring)
    assert len(rings) == 2
    back = draw_polygons(ring.shape, [(1, rings)]) > 0
    assert not back[15:25, 15:25].any()  # the hole stays empty
    assert (back & ring).sum() / (back | ring).sum() > 0.97
    s = export_labels(toy_labels, "yolo-seg", tmp_path / "yolo")
    assert 0 <= s["iou_lost"] < 0.01 and s["polygon_miou"] > 0.99
    line = (tmp_path / "yolo" / "labels" / "unlabeled_00000.txt").read_text().splitlines()[0].split()
    assert 0 <= int(line[0]) < 6 and len(line) % 2 == 1 and all(0 <= float(v) <= 1 for v in line[1:])
    assert "names:" in (tmp_path / "yolo" / "data.yaml").read_text()


def test_old_folder_exports_and_says_what_is_missing(old_labels: Path, tmp_path: Path) -> None:
    s = export_labels(old_labels, "cvat", tmp_path / "cvat")
    assert s["missing_fields"] == ["margin", "rle", "uncovered_fraction"]
    assert s["object_maps"] == 0 and any("SegmentationObject" in n for n in s["notes"])
    export_labels(old_labels, "coco", tmp_path / "coco")  # per-class regions: still exact
    _round_trip("coco", tmp_path / "coco" / "instances.json", old_labels, tmp_path)


def test_review_picks_the_top_n(toy_labels: Path, tmp_path: Path) -> None:
    from zsplg_fast.review.folder import LabelFolder
    from zsplg_fast.review.order import review_order

    order = review_order(LabelFolder(toy_labels))
    assert [s.need for s in order] == sorted((s.need for s in order), reverse=True)
    s = export_labels(toy_labels, "coco", tmp_path / "top", review=2)
    files = [i["file_name"] for i in json.loads((tmp_path / "top" / "instances.json").read_text())["images"]]
    assert s["images"] == 2 and s["of"] == 3 and files == [f"{o.id}.jpg" for o in order[:2]]


@pytest.mark.parametrize("fmt", ["coco", "cvat"])
def test_masks_at_working_resolution_round_trip(capped_labels: Path, tmp_path: Path, fmt: str) -> None:
    """Meta masks at the working size (96 px) are brought to the label's size (256 px) as the label was:
    the instance export and our import give back the label PNG's pixels exactly."""
    meta = json.loads(next((capped_labels / "meta").glob("*.json")).read_text())
    assert meta["work_size"] != [meta["height"], meta["width"]] and meta["masks"]
    export_labels(capped_labels, fmt, tmp_path / fmt)
    src = tmp_path / fmt / ("instances.json" if fmt == "coco" else "segmentation_mask.zip")
    _round_trip(fmt, src, capped_labels, tmp_path)
