"""The official decoder interface: right at every orig_im_size, and equal to SamPredictor.predict."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from segment_anything import SamPredictor
from segment_anything.utils.onnx import SamOnnxModel
from segment_anything.utils.transforms import ResizeLongestSide

from zsplg_fast.engines.base import load_engine
from zsplg_fast.export.onnx import EXPORT_FUNCTIONS
from zsplg_fast.export.specs import get_spec

SIZES = [(768, 1024), (500, 333), (1080, 1920), (240, 240)]  # 3:4, portrait, 16:9, square


def _feeds(h: int, w: int, g: np.random.Generator) -> dict[str, np.ndarray]:
    return {
        "image_embeddings": g.standard_normal((1, 128, 16, 16)).astype(np.float32),
        "point_coords": np.array([[[100.0, 60.0], [30.0, 170.0], [0.0, 0.0]]], np.float32),
        "point_labels": np.array([[1.0, 0.0, -1.0]], np.float32),
        "mask_input": np.zeros((1, 1, 64, 64), np.float32),
        "has_mask_input": np.zeros(1, np.float32),
        "orig_im_size": np.array([h, w], np.float32),
    }


@pytest.mark.parametrize("hw", SIZES)
def test_decoder_is_right_at_every_orig_im_size(hw: tuple[int, int], exported: dict[str, Any]) -> None:
    path = exported["sam_decoder"].path
    onnx_engine, torch_engine = load_engine(path), load_engine(path, backend="torch")
    feeds = _feeds(*hw, np.random.default_rng(0))
    a, b = onnx_engine(feeds), torch_engine(feeds)
    assert a["masks"].shape == (1, 4, *hw)
    np.testing.assert_allclose(a["masks"], b["masks"], atol=1e-4, rtol=1e-4)


def test_unfixed_upstream_wrapper_is_wrong_off_the_dummy_ratio(tiny_sam: Any, tmp_path: Path) -> None:
    """The trap the fix avoids, reproduced: PyPI SamOnnxModel bakes the dummy's crop (issue #56)."""
    p = get_spec("sam_decoder").bind(tiny_sam)
    p.module = SamOnnxModel(tiny_sam, return_single_mask=False).eval()
    EXPORT_FUNCTIONS["legacy"](p, tmp_path / "upstream.onnx", 17, False)
    import onnxruntime as ort

    sess = ort.InferenceSession(str(tmp_path / "upstream.onnx"), providers=["CPUExecutionProvider"])
    feeds = _feeds(768, 1024, np.random.default_rng(0))
    got = sess.run(["masks"], feeds)[0]
    with torch.no_grad():
        ref = p.module(**{k: torch.from_numpy(v) for k, v in feeds.items()})[0].numpy()
    assert got.shape == ref.shape
    cos = float(np.dot(got.ravel(), ref.ravel()) / (np.linalg.norm(got) * np.linalg.norm(ref)))
    assert cos < 0.99  # upstream's export is wrong here; ours matches (test above)


def test_official_interface_matches_sam_predictor(tiny_sam: Any, exported: dict[str, Any]) -> None:
    """ONNX encoder (with preprocess) + ONNX decoder == SamPredictor.set_image + predict, same points."""
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, (180, 300, 3), dtype=np.uint8)  # 3:5, not the dummy's ratio
    predictor = SamPredictor(tiny_sam)
    predictor.set_image(image)
    points = np.array([[120.0, 40.0], [200.0, 150.0]])
    labels = np.array([1, 0])
    ref_multi, ref_scores, ref_low = predictor.predict(
        points, labels, multimask_output=True, return_logits=True
    )
    ref_single, ref_single_score, _ = predictor.predict(
        points, labels, multimask_output=False, return_logits=True
    )

    resize = ResizeLongestSide(256)
    encoder = load_engine(exported["sam_encoder_preprocess"].path)
    emb = encoder({"image": resize.apply_image(image)})["image_embeddings"]
    np.testing.assert_allclose(emb, predictor.features.numpy(), atol=1e-4, rtol=1e-4)

    coords = resize.apply_coords(points, image.shape[:2])
    decoder = load_engine(exported["sam_decoder"].path)
    out = decoder(
        {
            "image_embeddings": emb,
            "point_coords": np.concatenate([coords, [[0.0, 0.0]]])[None].astype(np.float32),
            "point_labels": np.array([[*labels, -1]], np.float32),
            "mask_input": np.zeros((1, 1, 64, 64), np.float32),
            "has_mask_input": np.zeros(1, np.float32),
            "orig_im_size": np.array(image.shape[:2], np.float32),
        }
    )
    assert out["masks"].shape == (1, 4, 180, 300)
    np.testing.assert_allclose(out["masks"][0, 1:], ref_multi, atol=2e-3, rtol=1e-3)
    np.testing.assert_allclose(out["iou_predictions"][0, 1:], ref_scores, atol=1e-4)
    np.testing.assert_allclose(out["low_res_masks"][0, 1:], ref_low, atol=1e-3, rtol=1e-3)
    np.testing.assert_allclose(out["masks"][0, :1], ref_single, atol=2e-3, rtol=1e-3)
    np.testing.assert_allclose(out["iou_predictions"][0, :1], ref_single_score, atol=1e-4)
