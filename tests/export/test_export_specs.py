"""Every spec: torch → ONNX → onnxruntime CPU round trips on tiny models, sidecars, and engine parity."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from zsplg_fast.engines.base import load_engine
from zsplg_fast.engines.torch_engine import TorchEngine
from zsplg_fast.export.artifact import read_sidecar
from zsplg_fast.export.specs import SPECS, get_spec
from zsplg_fast.export.specs.base import axis_sizes
from zsplg_fast.utils.io import sha256_file

SAM_SPECS = ("sam_encoder", "sam_encoder_preprocess", "sam_decoder", "sam_decoder_batched")
ALL_SPECS = (*SAM_SPECS, "clip_dense", "clip_text", "segmenter")


def _model(name: str, tiny_sam: Any, tiny_clip: Any, tiny_segmenter_ckpt: Any) -> Any:
    family = get_spec(name).family
    if family == "sam":
        return tiny_sam
    if family == "clip":
        return tiny_clip
    from zsplg_fast.models.segmenter import load_checkpoint

    return load_checkpoint(tiny_segmenter_ckpt)[0]


def test_registry_has_every_spec() -> None:
    assert set(ALL_SPECS) <= set(SPECS)


@pytest.mark.parametrize("name", ALL_SPECS)
def test_validation_differs_from_dummy_in_every_dynamic_axis(
    name: str, tiny_sam: Any, tiny_clip: Any, tiny_segmenter_ckpt: Any
) -> None:
    opts = {"image_size": 96} if name == "clip_dense" else {}
    p = get_spec(name).bind(_model(name, tiny_sam, tiny_clip, tiny_segmenter_ckpt), **opts)
    dummy = axis_sizes(p.inputs, p.dummy)
    seen: dict[str, set[int]] = {a: set() for a in dummy}
    for feeds in p.validation:
        for axis, size in axis_sizes(p.inputs, feeds).items():
            assert size != dummy[axis], (axis, size)
            seen[axis].add(size)
    # the grid: B ∈ {1, 7}, N ∈ {1, 3}, H×W ∈ {320×480, 512×512} where the spec has those axes
    if "batch" in seen and name != "sam_encoder_preprocess":
        assert {1, 7} <= seen["batch"]
    if name == "sam_decoder_batched":
        assert {1, 3} <= seen["num_points"]
    if name == "segmenter":
        assert {320, 512} <= seen["height"] and {480, 512} <= seen["width"]


@pytest.mark.parametrize("name", ALL_SPECS)
def test_round_trip_parity_and_sidecar(name: str, exported: dict[str, Any], tiny_sam_ckpt: Any) -> None:
    row = exported[name]
    assert row.status == "exported"
    side = read_sidecar(row.path)
    assert side["validation"]["passed"] and not side["validation"]["allow_drift"]
    assert side["validation"]["sets"] >= 2
    for out in side["validation"]["outputs"]:
        assert out["max_abs"] < 1e-3 and out["cosine"] > 0.99999, out
    assert side["opset"] >= 17
    assert side["exporter"] == get_spec(name).exporter
    assert {"torch", "onnx", "onnxruntime"} <= set(side["versions"])
    assert side["size_bytes"] > 0 and side["export_time_s"] > 0
    assert side["sha256"] and len(side["source"]["weights"]) == 64
    if side["family"] == "sam":
        assert side["source"]["weights"] == sha256_file(tiny_sam_ckpt)
    import onnx

    model = onnx.load(row.path, load_external_data=False)
    assert [i.name for i in model.graph.input] == [d["name"] for d in side["inputs"]]
    assert [o.name for o in model.graph.output] == [d["name"] for d in side["outputs"]]


def test_sidecar_metadata(exported: dict[str, Any]) -> None:
    enc = read_sidecar(exported["sam_encoder"].path)
    assert enc["preprocessing"]["size"] == 256 and len(enc["preprocessing"]["mean"]) == 3
    assert enc["inputs"][0]["shape"] == ["batch", 3, 256, 256]
    assert enc["outputs"][0]["shape"] == ["batch", 128, 16, 16]
    seg = read_sidecar(exported["segmenter"].path)
    assert seg["class_names"] == ["background", "circle", "square", "star"]
    assert len(seg["palette"]) == 4 and seg["outputs"][0]["shape"] == ["batch", 4, "height", "width"]
    dense = read_sidecar(exported["clip_dense"].path)
    assert dense["outputs"][0]["shape"] == ["batch", 64, 6, 6] and dense["preprocessing"]["size"] == 96
    assert dense["spec_options"]["image_size"] == 96


def test_text_embeddings_saved_beside_clip_text(exported: dict[str, Any], tiny_clip: Any) -> None:
    from zsplg_fast.models import VOC_CLASSES, TextClassifier

    row = exported["text_embeddings"]
    clf = TextClassifier.load(row.path)
    assert clf.embeddings.shape == (len(VOC_CLASSES), 64)
    np.testing.assert_allclose(clf.embeddings.norm(dim=-1).numpy(), 1.0, atol=1e-5)


def _fresh_feeds(name: str, engine: Any) -> dict[str, np.ndarray]:
    """Inputs at sizes neither the dummy nor the validation sets used (B=3, N=2, 288×352)."""
    g = np.random.default_rng(7)
    sizes = {"batch": 3, "num_points": 2, "height": 288, "width": 352}
    if name == "sam_encoder_preprocess":
        sizes.update(height=200, width=256)
    feeds = {}
    for spec in engine.inputs:
        shape = [d if isinstance(d, int) else sizes[d] for d in spec.shape]
        if spec.dtype == "int64":
            feeds[spec.name] = g.integers(0, 49000, size=shape).astype(np.int64)
        elif spec.dtype == "uint8":
            feeds[spec.name] = g.integers(0, 256, size=shape).astype(np.uint8)
        else:
            feeds[spec.name] = g.standard_normal(shape).astype(np.float32)
    if name == "sam_decoder":
        feeds["point_labels"] = np.array([[1.0, -1.0]], np.float32)
        feeds["has_mask_input"] = np.array([0.0], np.float32)
        feeds["orig_im_size"] = np.array([300.0, 450.0], np.float32)
    if "point_labels" in feeds and name == "sam_decoder_batched":
        feeds["point_labels"] = (feeds["point_labels"] > 0).astype(np.float32)
    return feeds


@pytest.mark.parametrize("name", ALL_SPECS)
def test_torch_engine_equals_ort_engine(name: str, exported: dict[str, Any]) -> None:
    path = exported[name].path
    ort_engine = load_engine(path)
    torch_engine = load_engine(path, backend="torch")
    assert isinstance(torch_engine, TorchEngine) and ort_engine.backend == "ort"
    feeds = _fresh_feeds(name, ort_engine)
    a, b = ort_engine(feeds), torch_engine(feeds)
    assert set(a) == set(b) == {o.name for o in ort_engine.outputs}
    for k in a:
        assert a[k].shape == b[k].shape
        np.testing.assert_allclose(a[k], b[k], atol=2e-4, rtol=1e-3)


def test_batched_decoder_equals_upstream_prompt_encoder_and_mask_decoder(tiny_sam: Any) -> None:
    p = get_spec("sam_decoder_batched").bind(tiny_sam)
    g = torch.Generator().manual_seed(3)
    emb = torch.randn(1, 128, 16, 16, generator=g)
    coords = torch.rand(64, 1, 2, generator=g) * 256
    labels = torch.ones(64, 1)
    with torch.no_grad():
        masks, iou = p.module(emb, coords, labels)
        sparse, dense = tiny_sam.prompt_encoder(points=(coords, labels), boxes=None, masks=None)
        ref_masks, ref_iou = tiny_sam.mask_decoder(
            emb, tiny_sam.prompt_encoder.get_dense_pe(), sparse, dense, multimask_output=True
        )
    torch.testing.assert_close(masks, ref_masks, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(iou, ref_iou, atol=1e-5, rtol=1e-5)


def test_every_spec_binds_on_real_size_architectures() -> None:
    """Validation sets must differ from the dummy's sizes for real models too (bind only, no export)."""
    import warnings

    from zsplg_fast.models import build_clip, build_sam
    from zsplg_fast.models.segmenter import build_segmenter

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        models = {
            "sam": build_sam("vit_b"),
            "clip": build_clip("ViT-B-16"),
            "segmenter": build_segmenter("resnet50", 21),
        }
    for name in ALL_SPECS:
        spec = get_spec(name)
        p = spec.bind(models[spec.family])  # raises ConfigError if a validation size repeats the dummy's
        assert p.validation and p.inputs[0].name in p.dummy
