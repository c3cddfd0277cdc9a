"""CI floors of reduced precision on trained networks: the toy SAM and toy CLIP label toy-world images
through fp32, fp16 and int8 ONNX artifacts on onnxruntime CPU (the ``label --backend ort`` engines).

Floors (issue 13): fp16 mask fidelity (mean best IoU of the fp32 masks) >= 0.98 and label mIoU within
0.5 points of fp32; int8 label mIoU within 1 point. The full table: bench/precision_fidelity.py.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

pytest.importorskip("modelopt.onnx.autocast", reason="fp16 ONNX needs zsplg-fast[precision]")

from zsplg_fast.bench.precision_fidelity import (
    LABEL_ARTIFACTS,
    compare_labels,
    export_toy,
    label_toy,
    ort_label_engines,
    toy_setup,
)
from zsplg_fast.data.synthetic import TOY_WORLD, render_split_sample
from zsplg_fast.export.precision import precision_artifact

VAL_IMAGES, CALIB_IMAGES = 4, 3


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    torch.set_num_threads(1)
    setup = toy_setup()
    # the legacy exporter is 2-3x faster on the SAM wrappers (the test is about precision, not exporters)
    legacy = {"sam_encoder": "legacy", "sam_decoder_batched": "legacy"}
    fp32 = export_toy(setup, tmp_path_factory.mktemp("toy-precision"), exporters=legacy)
    calib = label_toy(
        setup,
        ort_label_engines(fp32),
        [render_split_sample(TOY_WORLD, "labeled", i).image for i in range(CALIB_IMAGES)],
        record=8,
    )
    val = [render_split_sample(TOY_WORLD, "val", i) for i in range(VAL_IMAGES)]
    images, gts = [s.image for s in val], [s.label for s in val]
    ref = label_toy(setup, ort_label_engines(fp32), images)
    out: dict[str, Any] = {"calib": calib}
    for p in ("fp16", "int8"):
        paths = {
            k: precision_artifact(fp32[k], p, calibration=calib.feeds[k] if p == "int8" else None).path
            for k in LABEL_ARTIFACTS
        }
        out[p] = compare_labels(
            ref, label_toy(setup, ort_label_engines(paths), images), gts, setup.num_classes
        )
        out[f"{p}_paths"] = paths
    return out


def test_int8_calibration_data_is_what_the_engines_saw(runs: dict[str, Any]) -> None:
    feeds = runs["calib"].feeds
    assert [f["image"].shape for f in feeds["sam_encoder"]] == [(1, 3, 256, 256)] * CALIB_IMAGES
    assert [f["image"].shape for f in feeds["clip_dense"]] == [(1, 3, 256, 256)] * CALIB_IMAGES
    dec = feeds["sam_decoder_batched"]
    assert 1 <= len(dec) <= 8 and all(f["image_embeddings"].shape[0] == 1 for f in dec)  # record=8 caps it


def test_fp16_floors(runs: dict[str, Any]) -> None:
    r = runs["fp16"]
    assert r["masks_ref"] >= 2 * VAL_IMAGES  # trained toy SAM: several masks per image, not one
    assert r["mean_best_iou"] >= 0.98, r
    assert abs(r["miou_diff_points"]) <= 0.5, r
    assert 0.9 <= r["count_ratio"] <= 1.1, r


def test_int8_floor(runs: dict[str, Any]) -> None:
    r = runs["int8"]
    assert abs(r["miou_diff_points"]) <= 1.0, r
    assert r["miou_ref"] > 50.0  # the fp32 labels are good enough for the difference to mean something


def test_precision_artifacts_say_what_they_are(runs: dict[str, Any]) -> None:
    import onnx

    for p in ("fp16", "int8"):
        for name, path in runs[f"{p}_paths"].items():
            assert Path(path).name == f"{name}.{p}.onnx"
    enc = onnx.load(str(runs["int8_paths"]["sam_encoder"]))
    assert any(n.op_type == "QuantizeLinear" for n in enc.graph.node)


def test_fp16_artifacts_keep_softmax_in_fp16(runs: dict[str, Any]) -> None:
    """Issue 20 (14): every attention Softmax of the fp16 toy SAM / CLIP graphs computes in fp16 (no
    Cast pair splitting TensorRT's MatMul → Softmax → MatMul fusion); the floors above hold with it."""
    import onnx

    for name, path in runs["fp16_paths"].items():
        g = onnx.shape_inference.infer_shapes(onnx.load(str(path))).graph
        types = {v.name: v.type.tensor_type.elem_type for v in [*g.value_info, *g.output]}
        softmax = [n for n in g.node if n.op_type == "Softmax"]
        assert softmax, name
        assert {types.get(n.input[0]) for n in softmax} == {onnx.TensorProto.FLOAT16}, name
        assert {types.get(n.output[0]) for n in softmax} == {onnx.TensorProto.FLOAT16}, name
