"""Hostile and wrong input: zip slip, zip bombs, and archives or JSON files that do not fit the folder."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest

from zsplg_fast.errors import DatasetError
from zsplg_fast.review.run import export_labels, import_labels
from zsplg_fast.review.safezip import safe_extract


def _zip(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


@pytest.mark.parametrize("name", ["/etc/evil.txt", "../evil.txt", "a/../../evil.txt", "C:/evil.txt"])
def test_zip_slip_is_refused(tmp_path: Path, name: str) -> None:
    z = _zip(tmp_path / "slip.zip", {"ok.txt": b"1", name: b"2"})
    with pytest.raises(DatasetError, match="slip"):
        safe_extract(z, tmp_path / "x")
    assert not (tmp_path / "evil.txt").exists() and not (tmp_path / "x" / "ok.txt").exists()


def test_member_past_the_size_cap_is_refused(tmp_path: Path) -> None:
    z = _zip(tmp_path / "bomb.zip", {"big.bin": b"\0" * 5000})
    with pytest.raises(DatasetError, match=r"big\.bin.*cap"):
        safe_extract(z, tmp_path / "x", max_member_bytes=4096)
    with pytest.raises(DatasetError, match="cap"):
        safe_extract(z, tmp_path / "y", max_total_bytes=4096)
    assert not (tmp_path / "y" / "big.bin").exists()
    assert safe_extract(z, tmp_path / "z") == [(tmp_path / "z" / "big.bin").resolve()]


def test_symlink_member_is_refused(tmp_path: Path) -> None:
    z = tmp_path / "link.zip"
    with zipfile.ZipFile(z, "w") as zf:
        info = zipfile.ZipInfo("link")
        info.external_attr = 0o120777 << 16
        zf.writestr(info, "/etc/passwd")
    with pytest.raises(DatasetError, match="symbolic link"):
        safe_extract(z, tmp_path / "x")


def test_cvat_labelmap_lacking_a_class(toy_labels: Path, tmp_path: Path) -> None:
    export_labels(toy_labels, "cvat", tmp_path / "cvat")
    src = zipfile.ZipFile(tmp_path / "cvat" / "segmentation_mask.zip")
    members = {n: src.read(n) for n in src.namelist()}
    lines = members["labelmap.txt"].decode().splitlines()
    members["labelmap.txt"] = "\n".join(ln for ln in lines if not ln.startswith("star:")).encode()
    bad = _zip(tmp_path / "bad.zip", members)
    with pytest.raises(DatasetError, match=r"bad\.zip: labelmap.txt lacks class\(es\) \['star'\]"):
        import_labels("cvat", bad, str(toy_labels), tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_labelstudio_json_for_other_images(toy_labels: Path, tmp_path: Path) -> None:
    export_labels(toy_labels, "labelstudio", tmp_path / "ls")
    tasks = json.loads((tmp_path / "ls" / "tasks.json").read_text())
    for t in tasks:
        t["data"].pop("zsplg_id")
        t["data"]["image"] = t["data"]["image"].replace("unlabeled_", "other_")
    other = tmp_path / "other.json"
    other.write_text(json.dumps(tasks))
    with pytest.raises(
        DatasetError, match=r"other\.json: 3 of 3 tasks are for images not in the label folder"
    ):
        import_labels("labelstudio", other, str(toy_labels), tmp_path / "out")


def test_coco_with_unknown_category_ids(toy_labels: Path, tmp_path: Path) -> None:
    export_labels(toy_labels, "coco", tmp_path / "coco")
    data = json.loads((tmp_path / "coco" / "instances.json").read_text())
    data["annotations"][0]["category_id"] = 77
    bad = tmp_path / "unknown.json"
    bad.write_text(json.dumps(data))
    with pytest.raises(DatasetError, match=r"unknown\.json: annotations use category ids \[77\]"):
        import_labels("coco", bad, str(toy_labels), tmp_path / "out")
    data["annotations"][0]["category_id"] = 1
    data["categories"][0]["name"] = "dinosaur"
    bad.write_text(json.dumps(data))
    with pytest.raises(DatasetError, match="dinosaur"):
        import_labels("coco", bad, str(toy_labels), tmp_path / "out")


def test_ids_that_climb_out_are_refused(tmp_path: Path) -> None:
    tasks = [{"data": {"image": "x.jpg", "zsplg_id": "../../escape"}, "predictions": []}]
    src = tmp_path / "t.json"
    src.write_text(json.dumps(tasks))
    pytest.importorskip("label_studio_converter", reason="label-studio-converter: [review] extra")
    with pytest.raises(DatasetError, match="not a relative name"):
        import_labels("labelstudio", src, "background,cat", tmp_path / "out")


def test_export_never_writes_over_a_folder(toy_labels: Path, tmp_path: Path) -> None:
    from zsplg_fast.errors import OutputExistsError

    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("mine")
    with pytest.raises(OutputExistsError, match="not made by `zsplg-fast labels export`"):
        export_labels(toy_labels, "coco", tmp_path / "mine", force=True)
    assert [p.name for p in (tmp_path / "mine").iterdir()] == ["notes.txt"]


def test_cli_export_import_report(toy_labels: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from zsplg_fast.cli.main import app

    run = CliRunner().invoke
    res = run(app, ["labels", "export", str(toy_labels), "--format", "coco", "--out", str(tmp_path / "c")])
    assert res.exit_code == 0, res.output
    src = tmp_path / "c" / "instances.json"
    res = run(app, ["labels", "import", str(src), "--format", "coco", "--classes", str(toy_labels)])
    assert res.exit_code == 2 and "--out" in res.output  # usage error: the output is required
    args = [
        "labels",
        "import",
        str(src),
        "-f",
        "coco",
        "--classes",
        str(toy_labels),
        "--out",
        str(tmp_path / "i"),
    ]
    assert run(app, args).exit_code == 0 and len(list((tmp_path / "i" / "labels").glob("*.png"))) == 3
    res = run(app, ["labels", "export", str(toy_labels), "--format", "yolo", "--out", str(tmp_path / "y")])
    assert "yolo-seg" in str(res.exception)  # unknown format: the valid names are listed


def test_class_order_is_checked_without_a_manifest(toy_labels: Path, tmp_path: Path) -> None:
    classes = json.loads((toy_labels / "manifest.json").read_text())["classes"]
    swapped = [classes[0], classes[2], classes[1], *classes[3:]]
    export_labels(toy_labels, "cvat", tmp_path / "cvat")
    archive = tmp_path / "cvat" / "segmentation_mask.zip"
    with pytest.raises(
        DatasetError, match=r"segmentation_mask\.zip: labelmap.txt lists the classes in another"
    ):
        import_labels("cvat", archive, ",".join(swapped), tmp_path / "a")
    import_labels("cvat", archive, ",".join(classes), tmp_path / "b")  # same order as a list: fine
    export_labels(toy_labels, "coco", tmp_path / "coco")
    with pytest.raises(DatasetError, match=r"instances\.json: categories are in another order"):
        import_labels("coco", tmp_path / "coco" / "instances.json", ",".join(swapped), tmp_path / "c")
