"""`zsplg-fast label --sam sam2_tiny` on the three real dataset layouts (VOC, COCO, a plain folder), each
made here on the fly: torch and onnxruntime engines label every image at its own size with the same masks,
the manifest records the proposer (family, variant, checkpoint, sha256), and a rerun with the other
backend resumes the folder (the fingerprint ignores the backend); then ``--devices cpu:2`` (two worker
processes over disjoint shards) writes the one-process labels with the same fingerprint."""

from __future__ import annotations

import hashlib
import json
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw
from typer.testing import CliRunner

pytest.importorskip("sam2", reason="the [sam2] extra is not installed")

from zsplg_fast.cli.main import app

CONFIG = Path(__file__).parents[2] / "zsplg_fast" / "configs" / "toy_ci.yaml"
SIZES = ((60, 88), (72, 56))  # (h, w): two aspect ratios, neither SAM 2's square
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::FutureWarning")


def _image(path: Path, hw: tuple[int, int], seed: int) -> None:
    """Flat-coloured boxes and discs on a coloured background (objects for the AMG to find)."""
    rng = np.random.default_rng(seed)
    h, w = hw
    img = Image.new("RGB", (w, h), tuple(int(c) for c in rng.integers(0, 255, 3)))
    draw = ImageDraw.Draw(img)
    for k in range(3):
        x0, y0 = int(rng.integers(0, w // 2)), int(rng.integers(0, h // 2))
        box = (x0, y0, x0 + int(rng.integers(12, w // 2)), y0 + int(rng.integers(12, h // 2)))
        fill = tuple(int(c) for c in rng.integers(0, 255, 3))
        (draw.ellipse if k % 2 else draw.rectangle)(box, fill=fill)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, quality=95) if path.suffix == ".jpg" else img.save(path)


def _voc(root: Path) -> tuple[list[str], dict[str, tuple[int, int]]]:
    """VOCdevkit/VOC2012: JPEGImages, SegmentationClass, ImageSets/Segmentation/val.txt; --classes voc."""
    voc = root / "VOCdevkit" / "VOC2012"
    ids = ["2007_000032", "2007_000039"]
    for k, (sid, hw) in enumerate(zip(ids, SIZES, strict=True)):
        _image(voc / "JPEGImages" / f"{sid}.jpg", hw, k)
        (voc / "SegmentationClass").mkdir(exist_ok=True)
        Image.fromarray(np.full(hw, k + 1, np.uint8), mode="L").save(voc / "SegmentationClass" / f"{sid}.png")
    (voc / "ImageSets" / "Segmentation").mkdir(parents=True)
    (voc / "ImageSets" / "Segmentation" / "val.txt").write_text("\n".join(ids) + "\n")
    args = ["--data", f"voc:{voc}", "--split", "val", "--classes", "voc"]
    return args, dict(zip(ids, SIZES, strict=True))


def _coco(root: Path) -> tuple[list[str], dict[str, tuple[int, int]]]:
    """annotations/instances_val2017.json + val2017/*.jpg (one polygon per image); --classes auto."""
    images, anns = [], []
    for k, hw in enumerate(SIZES):
        name = f"{k + 1:012d}.jpg"
        _image(root / "val2017" / name, hw, 10 + k)
        images.append({"id": k + 1, "file_name": name, "height": hw[0], "width": hw[1]})
        poly = [2.0, 2.0, hw[1] - 3.0, 2.0, hw[1] - 3.0, hw[0] / 2, 2.0, hw[0] / 2]
        box = [2, 2, hw[1] - 5, hw[0] / 2 - 2]
        anns.append({"id": k + 1, "image_id": k + 1, "category_id": 1 + 17 * k, "iscrowd": 0,
                     "segmentation": [poly], "area": 1.0, "bbox": box})  # fmt: skip
    cats = [{"id": 1, "name": "person", "supercategory": "person"},
            {"id": 18, "name": "dog", "supercategory": "animal"}]  # fmt: skip
    ann = root / "annotations" / "instances_val2017.json"
    ann.parent.mkdir(parents=True)
    ann.write_text(json.dumps({"images": images, "annotations": anns, "categories": cats}))
    ids = [Path(i["file_name"]).stem for i in images]
    return ["--data", f"coco:{root}", "--split", "val2017", "--classes", "auto"], dict(
        zip(ids, SIZES, strict=True)
    )


def _folder(root: Path) -> tuple[list[str], dict[str, tuple[int, int]]]:
    """A user's folder: nested, mixed formats; --classes FILE."""
    _image(root / "imgs" / "a.png", SIZES[0], 20)
    _image(root / "imgs" / "trip" / "b.jpg", SIZES[1], 21)
    (root / "classes.txt").write_text("background\ncircle|disc\nsquare\n")
    args = ["--data", f"folder:{root / 'imgs'}", "--classes", str(root / "classes.txt")]
    return args, {"a": SIZES[0], "trip/b": SIZES[1]}


SOURCES: dict[str, Callable[[Path], tuple[list[str], dict[str, tuple[int, int]]]]] = {
    "voc": _voc,
    "coco": _coco,
    "folder": _folder,
}


def _run(args: list[str], ckpt: Path, out: Path, *extra: str) -> None:
    base = ["label", *args, "--sam", "sam2_tiny", "--sam-checkpoint", str(ckpt), "--clip", "toy"]
    base += ["--config", str(CONFIG), "--set", "amg.points_per_side=4", "--set", "amg.pred_iou_thresh=0"]
    base += ["--set", "amg.stability_score_thresh=0", "--device", "cpu", "--out", str(out), *extra]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = CliRunner().invoke(app, base)
    assert res.exit_code == 0, res.output


def _labels(out: Path) -> dict[str, np.ndarray]:
    return {
        p.relative_to(out / "labels").with_suffix("").as_posix(): np.array(Image.open(p))
        for p in sorted((out / "labels").rglob("*.png"))
    }


def _masks(out: Path) -> dict[str, list[tuple[str, int, list[float], float]]]:
    """Per image, its masks from the meta: (RLE counts, area, box, predicted IoU)."""
    return {
        p.stem: [
            (str(m["rle"]["counts"]), m["area"], m["bbox_xywh"], m["predicted_iou"])
            for m in json.loads(p.read_text())["masks"]
        ]
        for p in sorted((out / "meta").rglob("*.json"))
    }


def _mtimes(out: Path) -> list[int]:
    return [p.stat().st_mtime_ns for p in sorted((out / "labels").rglob("*.png"))]


@pytest.mark.parametrize("kind", list(SOURCES))
def test_sam2_labels_each_layout_on_torch_and_onnxruntime(
    kind: str, tmp_path: Path, sam2_tiny_ckpt: Path, sam2_toy_engines: Path
) -> None:
    args, sizes = SOURCES[kind](tmp_path / "data")
    torch_out, ort_out = tmp_path / "torch", tmp_path / "ort"
    _run(args, sam2_tiny_ckpt, torch_out)
    labels = _labels(torch_out)
    assert {k: v.shape for k, v in labels.items()} == sizes  # every image, at its own size
    metas = [json.loads(p.read_text()) for p in sorted((torch_out / "meta").rglob("*.json"))]
    assert len(metas) == len(sizes) and all(m["num_masks"] >= 1 for m in metas), metas
    manifest = json.loads((torch_out / "manifest.json").read_text())
    assert manifest["proposer"] == {
        "family": "sam2",
        "variant": "sam2_tiny",
        "checkpoint": str(sam2_tiny_ckpt),
        "sha256": hashlib.sha256(sam2_tiny_ckpt.read_bytes()).hexdigest(),
    }
    assert manifest["weights"]["sam"] == manifest["proposer"]["sha256"]
    assert manifest["engines"]["proposer"] == "sam2" and manifest["source"] == args[1]

    _run(args, sam2_tiny_ckpt, ort_out, "--backend", "ort", "--engines", str(sam2_toy_engines))
    assert set(_labels(ort_out)) == set(labels)
    got = _masks(ort_out)
    for k, want in _masks(torch_out).items():  # the same masks, scores within onnxruntime's last bits
        assert [m[:3] for m in got[k]] == [m[:3] for m in want], k
        np.testing.assert_allclose([m[3] for m in got[k]], [m[3] for m in want], atol=1e-4)
    # (labels are not compared: toy CLIP scores VOC / COCO names it never saw as near ties)
    ort_manifest = json.loads((ort_out / "manifest.json").read_text())
    assert ort_manifest["engines"]["decoder"] == "sam2_decoder_batched"
    assert ort_manifest["proposer"] == manifest["proposer"]

    # resume with the other backend: onnxruntime on the torch folder relabels nothing
    before = _mtimes(torch_out)
    _run(args, sam2_tiny_ckpt, torch_out, "--backend", "ort", "--engines", str(sam2_toy_engines))
    assert _mtimes(torch_out) == before


def test_sam2_devices_two_workers_write_the_one_process_labels(tmp_path: Path, sam2_tiny_ckpt: Path) -> None:
    """``--devices cpu:2``: two spawned workers (each builds sam2_tiny from the checkpoint) label disjoint
    shards into one folder: the labels of one process, the manifest's proposer record and fingerprint."""
    args, sizes = _folder(tmp_path / "data")
    one, two = tmp_path / "one", tmp_path / "two"
    _run(args, sam2_tiny_ckpt, one)
    _run(args, sam2_tiny_ckpt, two, "--devices", "cpu:2")
    a, b = _labels(one), _labels(two)
    assert set(b) == set(sizes)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
    status = json.loads((two / "shards" / "devices.json").read_text())
    assert status["labeled"] == 2 and [w["status"] for w in status["workers"]] == ["done", "done"]
    m1, m2 = (json.loads((d / "manifest.json").read_text()) for d in (one, two))
    assert m2["proposer"] == m1["proposer"] and m2["proposer"]["family"] == "sam2"
    assert m2["fingerprint"] == m1["fingerprint"]  # so either way of running resumes the other's folder


def test_sam2_labels_on_onnxruntime_int8(
    tmp_path: Path, sam2_tiny_ckpt: Path, sam2_toy_engines: Path
) -> None:
    """``--backend ort --precision int8``: the ``onnx-int8`` artifacts of sam2_encoder, sam2_decoder_batched
    and clip_dense (quantized from the shared export) label every image; the manifest says int8 ran."""
    import shutil

    from zsplg_fast.export.quantize import quantize_artifact

    engines = tmp_path / "engines"
    shutil.copytree(sam2_toy_engines, engines)
    for name in ("sam2_encoder", "sam2_decoder_batched", "clip_dense"):
        q = quantize_artifact(engines / f"{name}.onnx")
        assert q.sidecar["precision"] == "int8" and q.sidecar["spec"] == name
    args, sizes = _folder(tmp_path / "data")
    out = tmp_path / "int8"
    _run(args, sam2_tiny_ckpt, out, "--backend", "ort", "--precision", "int8", "--engines", str(engines))
    assert {k: v.shape for k, v in _labels(out).items()} == sizes
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["run_mode"]["precision"] == "int8" and manifest["proposer"]["family"] == "sam2"
    assert manifest["engines"]["decoder"] == "sam2_decoder_batched"


def test_label_with_the_real_sam21_hiera_t_config(tmp_path: Path) -> None:
    """``--sam sam2.1_hiera_t`` as a user names it: the sam2 package's own config (Hiera-T, 1024 px), its
    preset (SAM2AutomaticMaskGenerator's pred_iou_thresh 0.8), random weights warned and recorded as
    ``random-init`` in the proposer record; one small image, 2×2 points."""
    args, _ = _folder(tmp_path / "data")
    (tmp_path / "data" / "imgs" / "trip" / "b.jpg").unlink()  # one image: Hiera-T at 1024 px on a CPU
    out = tmp_path / "out"
    cmd = ["label", *args, "--sam", "sam2.1_hiera_t", "--clip", "toy"]  # no config file: the presets
    cmd += ["--set", "amg.points_per_side=2", "--device", "cpu", "--out", str(out)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = CliRunner().invoke(app, cmd)
    assert res.exit_code == 0, res.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["proposer"] == {
        "family": "sam2",
        "variant": "sam2.1_hiera_t",
        "checkpoint": None,
        "sha256": "random-init",
    }
    assert manifest["config"]["amg"]["pred_iou_thresh"] == 0.8  # the SAM 2 preset
    assert (out / "labels" / "a.png").is_file()
