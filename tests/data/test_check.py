"""check_source counts problems without crashing; the `data` CLI group (synth, check, coco-masks)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from zsplg_fast.cli.data import app
from zsplg_fast.data import open_source, write_label
from zsplg_fast.data.check import check_source

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")


def make_messy_voc(root: Path) -> Path:
    """Five samples: ok, truncated image, size mismatch, out-of-range label, RGB label."""
    (root / "JPEGImages").mkdir(parents=True)
    for sid in ("a_ok", "b_trunc", "c_size", "d_range", "e_rgb"):
        Image.new("RGB", (8, 6), (50, 60, 70)).save(root / "JPEGImages" / f"{sid}.png")
        write_label(root / "SegmentationClass" / f"{sid}.png", np.ones((6, 8), np.uint8))
    data = (root / "JPEGImages" / "b_trunc.png").read_bytes()
    (root / "JPEGImages" / "b_trunc.png").write_bytes(data[:40])
    write_label(root / "SegmentationClass" / "c_size.png", np.ones((5, 8), np.uint8))
    write_label(root / "SegmentationClass" / "d_range.png", np.full((6, 8), 9, np.uint8))
    Image.new("RGB", (8, 6), (128, 0, 0)).save(root / "SegmentationClass" / "e_rgb.png")
    return root


def test_check_source_counts_problems(tmp_path: Path) -> None:
    src = open_source(f"voc:{make_messy_voc(tmp_path / 'voc')}")
    seen: list[int] = []
    report = check_source(src, num_classes=3, progress=lambda done, total: seen.append(done))
    assert report.samples == 5 and report.ok == 1 and seen == [1, 2, 3, 4, 5]
    assert report.problem_counts == {"InputImageError": 1, "LabelFormatError": 3}
    by_id = {p.sample_id: p.message for p in report.problems}
    assert "b_trunc.png" in by_id["b_trunc"]
    assert "5x8" in by_id["c_size"] and "6x8" in by_id["c_size"]
    assert "[9]" in by_id["d_range"] and "RGB-coded" in by_id["e_rgb"]
    json.dumps(report.to_dict())


def test_cli_synth_then_check(tmp_path: Path) -> None:
    runner = CliRunner()
    out = tmp_path / "syn"
    res = runner.invoke(app, ["synth", "--out", str(out), "--num", "5", "--classes", "2", "--size", "48"])
    assert res.exit_code == 0, res.output
    assert (out / "JPEGImages").is_dir()
    res = runner.invoke(app, ["check", "--data", f"synthetic:{out}", "--num-classes", "3"])
    assert res.exit_code == 0, res.output
    assert "samples" in res.output and "5" in res.output


def test_cli_check_reports_problems_with_exit_1(tmp_path: Path) -> None:
    root = make_messy_voc(tmp_path / "voc")
    # a file name that is also rich markup ("[b]" = bold) is printed as it is, not swallowed
    Image.new("RGB", (8, 6)).save(root / "JPEGImages" / "f_[b]x.png")
    write_label(root / "SegmentationClass" / "f_[b]x.png", np.full((6, 8), 7, np.uint8))
    res = CliRunner().invoke(app, ["check", "--data", f"voc:{root}", "--num-classes", "3"])
    assert res.exit_code == 1, res.output
    assert "LabelFormatError" in res.output and "InputImageError" in res.output
    assert "f_[b]x" in res.output and "[7]" in res.output


def test_cli_coco_masks(tmp_path: Path) -> None:
    ann = tmp_path / "instances_val2017.json"
    ann.write_text(
        json.dumps(
            {
                "images": [{"id": 1, "file_name": "x.jpg", "height": 10, "width": 10}],
                "annotations": [
                    {
                        "id": 1,
                        "image_id": 1,
                        "category_id": 5,
                        "iscrowd": 0,
                        "segmentation": [[1, 1, 8, 1, 8, 8]],
                    }
                ],
                "categories": [{"id": 5, "name": "airplane"}],
            }
        )
    )
    res = CliRunner().invoke(app, ["coco-masks", "--ann", str(ann), "--out", str(tmp_path)])
    assert res.exit_code == 0, res.output
    label = np.array(Image.open(tmp_path / "masks" / "val2017" / "x.png"))
    assert set(np.unique(label).tolist()) == {0, 1}


def test_class_count_defaults_to_the_datasets_classes_txt(tmp_path: Path) -> None:
    root = tmp_path / "voc"
    (root / "JPEGImages").mkdir(parents=True)
    for sid, value in (("a_ok", 6), ("b_37", 37), ("c_ignore", 255)):
        Image.new("RGB", (8, 6)).save(root / "JPEGImages" / f"{sid}.png")
        write_label(root / "SegmentationClass" / f"{sid}.png", np.full((6, 8), value, np.uint8))
    (root / "classes.txt").write_text("".join(f"c{i}\n" for i in range(7)))
    report = check_source(open_source(f"voc:{root}"))
    assert report.num_classes == 7 and "classes.txt" in report.classes_from
    assert [p.sample_id for p in report.problems] == ["b_37"] and "[37]" in report.problems[0].message
    assert report.all_ignore == ["c_ignore"] and report.notes == {"all_ignore_masks": 1}
    res = CliRunner().invoke(app, ["check", "--data", f"voc:{root}"])
    assert res.exit_code == 1 and "[37]" in res.output and "checked against 7 classes" in res.output
    assert "all_ignore_masks" in res.output and "c_ignore" in res.output


def test_dropped_coco_polygons_are_reported(tmp_path: Path) -> None:
    polys = {1: [[1, 1, 8, 1, 8, 8]], 2: [[0, 0, 9, 9]], 3: [[1, 1, 3, 3, 5, 5]]}  # ok, 2 points, area 0
    anns = [
        {"id": i, "image_id": 1, "category_id": 5, "iscrowd": 0, "segmentation": seg}
        for i, seg in polys.items()
    ]
    data = {
        "images": [{"id": 1, "file_name": "x.jpg", "height": 10, "width": 10}],
        "annotations": anns,
        "categories": [{"id": 5, "name": "airplane"}],
    }
    (tmp_path / "annotations").mkdir()
    (tmp_path / "annotations" / "instances_val2017.json").write_text(json.dumps(data))
    (tmp_path / "val2017").mkdir()
    Image.new("RGB", (10, 10)).save(tmp_path / "val2017" / "x.jpg")
    report = check_source(open_source(f"coco:{tmp_path}"))
    assert report.num_classes == 2 and not report.problems
    assert report.notes == {"polygons_few_points": 1, "polygons_zero_area": 1, "annotations_dropped": 2}
    res = CliRunner().invoke(app, ["check", "--data", f"coco:{tmp_path}"])
    assert res.exit_code == 0 and "annotations_dropped" in res.output, res.output


def test_cli_malformed_crowd_rle_is_a_skipped_annotation(tmp_path: Path) -> None:
    """coco-masks and data check keep going past an RLE pycocotools refuses, naming its id and image."""
    root = tmp_path / "coco"
    (root / "annotations").mkdir(parents=True)
    (root / "val2017").mkdir()
    Image.new("RGB", (10, 10)).save(root / "val2017" / "x.jpg")
    poly = {"id": 1, "image_id": 1, "category_id": 5, "iscrowd": 0, "segmentation": [[1, 1, 8, 1, 8, 8]]}
    rle = {"counts": "!!!not-rle", "size": [10, 10]}
    crowd = {"id": 7, "image_id": 1, "category_id": 5, "iscrowd": 1, "segmentation": rle}
    ann = root / "annotations" / "instances_val2017.json"
    ann.write_text(
        json.dumps(
            {
                "images": [{"id": 1, "file_name": "x.jpg", "height": 10, "width": 10}],
                "annotations": [poly, crowd],
                "categories": [{"id": 5, "name": "airplane"}],
            }
        )
    )
    res = CliRunner().invoke(app, ["coco-masks", "--ann", str(ann), "--out", str(root)])
    assert res.exit_code == 0, res.output
    stats = json.loads(res.output)["stats"]
    assert stats["annotations_rle_invalid"] == 1 and stats["painted"] == 1
    assert stats["skipped_annotations"][0]["annotation"] == 7
    assert stats["skipped_annotations"][0]["image"] == "x.jpg"
    label = np.array(Image.open(root / "masks" / "val2017" / "x.png"))
    assert set(np.unique(label).tolist()) == {0, 1}
    res = CliRunner().invoke(app, ["check", "--data", f"coco:{root}"])
    assert res.exit_code == 0, res.output
    assert "annotations_rle_invalid" in res.output
    assert "skipped annotation 7 (x.jpg): invalid RLE counts" in res.output
