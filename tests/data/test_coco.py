"""COCO → semantic masks, checked against masks built directly with pycocotools' annToMask."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from zsplg_fast.data import open_source, read_label
from zsplg_fast.data.coco import category_map, class_names, convert_coco, load_coco, semantic_mask
from zsplg_fast.errors import DatasetError, OutputExistsError

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

# Non-contiguous ids, listed out of order: class index follows the sorted ids 1, 3, 18.
CATEGORIES = [{"id": 18, "name": "dog"}, {"id": 1, "name": "person"}, {"id": 3, "name": "car"}]


def _rect(x0: float, y0: float, x1: float, y1: float) -> list[float]:
    return [x0, y0, x1, y0, x1, y1, x0, y1]


def _uncompressed_rle(m: np.ndarray) -> dict[str, Any]:
    """Uncompressed COCO RLE (column-major runs, starting with a run of zeros)."""
    flat = m.flatten(order="F").astype(np.uint8)
    counts, cur, run = [], 0, 0
    for v in flat:
        if v == cur:
            run += 1
        else:
            counts.append(run)
            cur, run = v, 1
    counts.append(run)
    return {"counts": counts, "size": list(m.shape)}


def make_instances() -> dict[str, Any]:
    crowd1 = np.zeros((30, 40), np.uint8)
    crowd1[20:28, 25:38] = 1  # overlaps the person
    crowd2 = np.zeros((20, 20), np.uint8)
    crowd2[0:5, 0:20] = 1
    rle2 = mask_utils.encode(np.asfortranarray(crowd2))
    rle2["counts"] = rle2["counts"].decode("ascii")
    ann = [
        {"id": 1, "image_id": 1, "category_id": 1, "iscrowd": 0, "segmentation": [_rect(2, 2, 30, 25)]},
        {"id": 2, "image_id": 1, "category_id": 18, "iscrowd": 0, "segmentation": [_rect(10, 10, 18, 18)]},
        {
            "id": 3,
            "image_id": 1,
            "category_id": 3,
            "iscrowd": 0,
            "segmentation": [[20, 5, 38, 5, 38, 15], _rect(33, 20, 39, 29)],  # two parts
        },
        {"id": 4, "image_id": 1, "category_id": 1, "iscrowd": 1, "segmentation": _uncompressed_rle(crowd1)},
        {
            "id": 5,
            "image_id": 1,
            "category_id": 3,
            "iscrowd": 0,
            "segmentation": [[0, 0, 39, 29]],
        },  # 2 points
        {
            "id": 6,
            "image_id": 1,
            "category_id": 18,
            "iscrowd": 0,
            "segmentation": [[1, 1, 5, 5, 9, 9]],
        },  # area 0
        {"id": 7, "image_id": 2, "category_id": 3, "iscrowd": 0, "segmentation": [_rect(3, 3, 15, 17)]},
        {"id": 8, "image_id": 2, "category_id": 1, "iscrowd": 1, "segmentation": rle2},
    ]
    images = [
        {"id": 1, "file_name": "000000000001.jpg", "height": 30, "width": 40},
        {"id": 2, "file_name": "000000000002.jpg", "height": 20, "width": 20},
        {"id": 3, "file_name": "000000000003.jpg", "height": 12, "width": 16},  # no annotations
    ]
    return {"images": images, "annotations": ann, "categories": CATEGORIES}


def write_coco(root: Path, split: str = "val2017", data: dict[str, Any] | None = None) -> Path:
    data = data or make_instances()
    ann_file = root / "annotations" / f"instances_{split}.json"
    ann_file.parent.mkdir(parents=True, exist_ok=True)
    ann_file.write_text(json.dumps(data))
    for img in data["images"]:
        p = root / split / img["file_name"]
        p.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (img["width"], img["height"]), (90, 90, 90)).save(p)
    return ann_file


def reference_mask(ann_file: Path, img_id: int, dropped_ids: set[int]) -> np.ndarray:
    """Built straight from pycocotools: things by area (large first), then crowd = 255."""
    coco = COCO(str(ann_file))
    cls = {cid: k + 1 for k, cid in enumerate(sorted(coco.getCatIds()))}
    info = coco.loadImgs([img_id])[0]
    out = np.zeros((info["height"], info["width"]), np.uint8)
    anns = [a for a in coco.loadAnns(coco.getAnnIds(imgIds=[img_id])) if a["id"] not in dropped_ids]
    things = [(coco.annToMask(a), a) for a in anns if not a["iscrowd"]]
    for m, a in sorted(things, key=lambda t: (-int(t[0].sum()), t[1]["id"])):
        out[m > 0] = cls[a["category_id"]]
    for a in anns:
        if a["iscrowd"]:
            out[coco.annToMask(a) > 0] = 255
    return out


def test_class_order_follows_sorted_category_ids(tmp_path: Path) -> None:
    coco = load_coco(write_coco(tmp_path))
    assert category_map(coco) == {1: 1, 3: 2, 18: 3}
    assert class_names(coco) == ["background", "person", "car", "dog"]


def test_semantic_mask_matches_anntomask(tmp_path: Path) -> None:
    ann_file = write_coco(tmp_path)
    coco = load_coco(ann_file)
    stats: Counter[str] = Counter()
    m1 = semantic_mask(coco, 1, stats=stats)
    np.testing.assert_array_equal(m1, reference_mask(ann_file, 1, dropped_ids={5, 6}))
    assert m1.dtype == np.uint8 and m1.shape == (30, 40)
    assert m1[14, 14] == 3  # small dog painted over the large person
    assert m1[4, 4] == 1 and m1[29, 0] == 0
    assert m1[22, 30] == 255 and m1[27, 36] == 255  # crowd over person and over car
    assert m1[0, 0] == 0  # the 2-point polygon was not read as a bbox
    np.testing.assert_array_equal(semantic_mask(coco, 2), reference_mask(ann_file, 2, set()))
    assert (semantic_mask(coco, 2)[:5] == 255).all()
    assert (semantic_mask(coco, 3) == 0).all()
    assert stats == Counter(
        polygons_few_points=1, polygons_zero_area=1, annotations_dropped=2, painted=3, crowd=1
    )


def test_unknown_category_id_is_an_error(tmp_path: Path) -> None:
    data = make_instances()
    data["annotations"][1]["category_id"] = 99
    ann_file = write_coco(tmp_path, data=data)
    with pytest.raises(DatasetError, match=r"instances_val2017\.json: annotation 2: unknown category id 99"):
        load_coco(ann_file)
    with pytest.raises(DatasetError, match="unknown category id 99"):
        open_source(f"coco:{tmp_path}")
    coco = load_coco(write_coco(tmp_path / "ok"))
    with pytest.raises(DatasetError, match="unknown category id 18"):
        semantic_mask(coco, 1, cat_map={1: 1, 3: 2})


def test_coco_source(tmp_path: Path) -> None:
    ann_file = write_coco(tmp_path)
    src = open_source(f"coco:{tmp_path}")
    assert src.name == "coco" and [s.id for s in src] == ["000000000001", "000000000002", "000000000003"]
    assert src.class_names == ["background", "person", "car", "dog"]
    s = src.samples[0]
    assert s.image_path == tmp_path / "val2017" / "000000000001.jpg" and s.has_label
    np.testing.assert_array_equal(s.load_label(num_classes=4), reference_mask(ann_file, 1, {5, 6}))
    assert s.load_image().shape == (30, 40, 3)
    assert [x.id for x in open_source(f"coco:{tmp_path}:instances_val2017.json")] == [x.id for x in src]
    assert len(open_source(f"coco:{tmp_path}", "val2017")) == 3


def test_coco_source_errors(tmp_path: Path) -> None:
    write_coco(tmp_path)
    write_coco(tmp_path, split="train2017")
    with pytest.raises(DatasetError, match="several annotation files"):
        open_source(f"coco:{tmp_path}")
    assert len(open_source(f"coco:{tmp_path}", "train2017")) == 3
    (tmp_path / "val2017" / "000000000002.jpg").unlink()
    with pytest.raises(DatasetError, match=r"image id 2: '000000000002\.jpg' not found"):
        open_source(f"coco:{tmp_path}", "val2017")
    (tmp_path / "annotations" / "instances_bad.json").write_text("{not json")
    with pytest.raises(DatasetError, match="not valid JSON"):
        open_source(f"coco:{tmp_path}:instances_bad.json")


def test_convert_coco_writes_unimatch_layout(tmp_path: Path) -> None:
    ann_file = write_coco(tmp_path)
    result = convert_coco(ann_file, tmp_path)
    assert result["images"] == 3 and result["split"] == "val2017" and result["num_classes"] == 4
    assert result["stats"]["polygons_few_points"] == 1 and result["stats"]["crowd"] == 2
    out = tmp_path / "masks" / "val2017"
    assert sorted(p.name for p in out.iterdir()) == [f"00000000000{k}.png" for k in (1, 2, 3)]
    np.testing.assert_array_equal(
        read_label(out / "000000000001.png", 4), reference_mask(ann_file, 1, {5, 6})
    )
    with pytest.raises(OutputExistsError, match="3 mask"):
        convert_coco(ann_file, tmp_path)
    assert convert_coco(ann_file, tmp_path, force=True)["images"] == 3
    # the masks are usable through a UniMatch split file
    (tmp_path / "val.txt").write_text("val2017/000000000001.jpg masks/val2017/000000000001.png\n")
    src = open_source(f"coco:{tmp_path}", "val.txt")
    assert src.samples[0].id == "000000000001" and src.samples[0].load_label()[14, 14] == 3


def test_malformed_rle_is_a_counted_skip_with_its_id_and_image(tmp_path: Path) -> None:
    """A crowd RLE that pycocotools cannot decode (or that decodes to garbage: runs not adding up to its
    size, a size not the image's) is dropped and listed, and the rest of the image is still painted."""
    data = make_instances()
    bad = [
        ("!!!garbage", [20, 20]),  # pycocotools: ValueError "Invalid RLE mask representation"
        ("0", [20, 20]),  # one run of 0 pixels: pycocotools returns uninitialised memory
        (data["annotations"][7]["segmentation"]["counts"], [10, 40]),  # another image's size
    ]
    for k, (counts, size) in enumerate(bad):
        ann = {"id": 20 + k, "image_id": 2, "category_id": 1, "iscrowd": 1}
        data["annotations"].append({**ann, "segmentation": {"counts": counts, "size": size}})
    ann_file = write_coco(tmp_path, data=data)
    result = convert_coco(ann_file, tmp_path)
    assert result["stats"]["annotations_rle_invalid"] == 3 and result["stats"]["crowd"] == 2
    skipped = {s["annotation"]: s for s in result["stats"]["skipped_annotations"]}
    assert {k: skipped[k]["image"] for k in (20, 21, 22)} == dict.fromkeys((20, 21, 22), "000000000002.jpg")
    assert "invalid RLE counts" in skipped[20]["reason"] and "add up to 0 pixels" in skipped[21]["reason"]
    assert "not the image's [20, 20]" in skipped[22]["reason"]
    assert skipped[5]["reason"] == "no usable polygon"  # the dropped polygons are listed too
    out = read_label(tmp_path / "masks" / "val2017" / "000000000002.png")
    np.testing.assert_array_equal(out, reference_mask(write_coco(tmp_path / "ref"), 2, set()))
    # the same through a source (label / train loading)
    src = open_source(f"coco:{tmp_path}")
    np.testing.assert_array_equal(src.samples[1].load_label(num_classes=4), out)
    assert src.label_stats["annotations_rle_invalid"] == 3
    assert [s["annotation"] for s in src.label_skips if s["image"] == "000000000002.jpg"] == [20, 21, 22]
