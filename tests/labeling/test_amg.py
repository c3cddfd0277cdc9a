"""Fast AMG over engines: op-level parity with segment-anything, and mask fidelity against upstream
``SamAutomaticMaskGenerator`` on the same model, image and parameters."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from segment_anything import SamAutomaticMaskGenerator
from segment_anything.utils import amg as up

from zsplg_fast.bench.synthetic_sam import build_colour_sam, sam_module_engines
from zsplg_fast.config.labeling import AmgConfig
from zsplg_fast.errors import ConfigError
from zsplg_fast.labeling import amg_ops as ops
from zsplg_fast.labeling.amg import MaskGenerator
from zsplg_fast.labeling.amg_lowres import exact_boxes, stability_bounds
from zsplg_fast.labeling.amg_output import uncompressed_rle

torch.set_num_threads(1)


def _image(h: int, w: int, seed: int = 0) -> np.ndarray:
    """Flat-coloured discs and boxes on a coloured background, plus noise: (h, w, 3) uint8."""
    rng = np.random.default_rng(seed)
    img = np.zeros((h, w, 3), np.uint8) + rng.integers(0, 255, 3, dtype=np.uint8)
    yy, xx = np.mgrid[:h, :w]
    for _ in range(12):
        cy, cx = rng.integers(0, h), rng.integers(0, w)
        r = rng.integers(min(h, w) // 12, min(h, w) // 3)
        disc = rng.random() < 0.5
        m = (yy - cy) ** 2 + (xx - cx) ** 2 < r * r if disc else (abs(yy - cy) < r) & (abs(xx - cx) < r * 0.6)
        img[m] = rng.integers(0, 255, 3, dtype=np.uint8)
    return np.clip(img.astype(np.int16) + rng.integers(-12, 12, img.shape), 0, 255).astype(np.uint8)


def _smooth_logits(k: int, size: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    base = torch.nn.functional.interpolate(
        torch.randn(k, 1, 12, 12, generator=g), size=(size, size), mode="bicubic"
    )
    return (
        base[:, 0] * 4
        - torch.linspace(-5, 5, k)[:, None, None]
        + 0.2 * torch.randn(k, size, size, generator=g)
    )


def _upstream_full(
    low: torch.Tensor, frame: int, input_hw: tuple[int, int], out_hw: tuple[int, int]
) -> torch.Tensor:
    """Sam.postprocess_masks, spelled out: (K, h4, w4) → (K, H, W)."""
    x = torch.nn.functional.interpolate(low[:, None], (frame, frame), mode="bilinear", align_corners=False)
    x = x[..., : input_hw[0], : input_hw[1]]
    return torch.nn.functional.interpolate(x, out_hw, mode="bilinear", align_corners=False)[:, 0]


def _best_iou(ref: list[np.ndarray], ours: list[np.ndarray]) -> float:
    """Mean over reference masks of the best IoU with any of ours (two empty masks: IoU 1)."""
    if not ref:
        return 1.0 if not ours else 0.0
    a = torch.from_numpy(np.stack(ref)).flatten(1).float()
    b = torch.from_numpy(np.stack(ours)).flatten(1).float() if ours else torch.zeros(1, a.shape[1])
    inter = a @ b.T
    union = a.sum(1, keepdim=True) + b.sum(1)[None] - inter
    iou = torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(inter))
    return float(iou.max(1).values.mean())


# ---- op-level parity with segment-anything ------------------------------------------------------


@pytest.mark.parametrize(("n", "layers", "scale"), [(16, 0, 1), (8, 2, 2), (5, 1, 1)])
def test_point_grids_and_crop_boxes_match_upstream(n: int, layers: int, scale: int) -> None:
    ours = ops.layer_point_grids(n, layers, scale)
    ref = up.build_all_layer_point_grids(n, layers, scale)
    assert len(ours) == len(ref)
    for a, b in zip(ours, ref, strict=True):
        np.testing.assert_array_equal(a, b)
    for hw in [(480, 640), (333, 500), (1000, 401)]:
        assert ops.crop_boxes(hw, layers, 512 / 1500) == up.generate_crop_boxes(hw, layers, 512 / 1500)


def test_boxes_stability_edges_match_upstream() -> None:
    logits = _smooth_logits(20, 40)
    logits[3] = -10.0  # an empty mask
    masks = logits > 0
    torch.testing.assert_close(ops.masks_to_boxes(masks), up.batched_mask_to_box(masks))
    ours, ref = ops.stability_score(logits, 0.0, 1.0), up.calculate_stability_score(logits, 0.0, 1.0)
    torch.testing.assert_close(ours, ref, equal_nan=True)
    boxes = up.batched_mask_to_box(masks)
    for crop in ([0, 0, 40, 40], [10, 5, 50, 45]):
        got = ops.near_crop_edge(boxes, crop, [0, 0, 60, 60])
        assert torch.equal(got, up.is_box_near_crop_edge(boxes, crop, [0, 0, 60, 60]))


@pytest.mark.parametrize("out_hw", [(768, 1024), (375, 500), (1200, 900), (333, 500), (64, 48)])
def test_upsample_and_exact_boxes_match_postprocess_masks(out_hw: tuple[int, int]) -> None:
    frame, low_size = 1024, 256
    input_hw = ops.preprocess_shape(*out_hw, frame)
    low = _smooth_logits(24, low_size, seed=out_hw[0])
    ref = _upstream_full(low, frame, input_hw, out_hw)
    cut = low[:, : -(-input_hw[0] // 4) + 1, : -(-input_hw[1] // 4) + 1]  # valid cells + 1
    assert torch.equal(ops.upsample_logits(cut, input_hw, out_hw, 4), ref)
    boxes = exact_boxes(cut, input_hw, out_hw, 4, (low_size, low_size))
    assert torch.equal(boxes, up.batched_mask_to_box(ref > 0))
    lower, upper = stability_bounds(cut, input_hw, out_hw, 4, 0.0, 1.0)
    exact = up.calculate_stability_score(ref, 0.0, 1.0)
    ok = torch.isnan(exact) | ((lower <= exact + 1e-6) & (exact <= upper + 1e-6))
    assert bool(ok.all())
    assert float((upper - lower).mean()) < 0.5  # the bounds are informative, not just [0, 1]


def test_uncompressed_rle_matches_upstream() -> None:
    masks = _smooth_logits(6, 17) > 0
    masks[0] = True
    masks[1] = False
    assert uncompressed_rle(masks.numpy()) == up.mask_to_rle_pytorch(masks)


# ---- end-to-end fidelity against SamAutomaticMaskGenerator --------------------------------------

_CASES = {
    "thresholds-0": {"pred_iou_thresh": 0.0, "stability_score_thresh": 0.0},
    "moderate": {"pred_iou_thresh": 0.5, "stability_score_thresh": 0.8},
    "crops": {"pred_iou_thresh": 0.0, "stability_score_thresh": 0.5, "crop_n_layers": 1},
    "small-regions": {"pred_iou_thresh": 0.0, "stability_score_thresh": 0.0, "min_mask_region_area": 50},
}


@pytest.fixture(scope="module")
def colour_sam():  # type: ignore[no-untyped-def]
    sam = build_colour_sam(256)
    return sam, *sam_module_engines(sam)


@pytest.mark.parametrize("case", sorted(_CASES))
def test_fidelity_to_upstream(colour_sam, case: str) -> None:  # type: ignore[no-untyped-def]
    sam, enc, dec = colour_sam
    kw = _CASES[case]
    img = _image(240, 320, seed=len(case))
    n = 8 if kw.get("crop_n_layers") else 12
    ref = SamAutomaticMaskGenerator(sam, points_per_side=n, **kw).generate(img)
    gen = MaskGenerator(enc, dec, AmgConfig(points_per_side=n, **kw), prompt_batch=50)
    ours = gen.generate(img)
    assert len(ref) >= 10  # the case exercises NMS/filters with many masks
    assert abs(len(ours) - len(ref)) <= 0.05 * len(ref)
    assert _best_iou([r["segmentation"] for r in ref], [o["segmentation"] for o in ours]) >= 0.98
    # Decisions are upstream's: same records, same order.
    assert [o["bbox"] for o in ours] == [r["bbox"] for r in ref]
    assert [o["area"] for o in ours] == [r["area"] for r in ref]
    np.testing.assert_allclose(
        [o["predicted_iou"] for o in ours], [r["predicted_iou"] for r in ref], rtol=1e-5, atol=1e-6
    )
    np.testing.assert_allclose(
        [o["stability_score"] for o in ours], [r["stability_score"] for r in ref], rtol=1e-6, equal_nan=True
    )
    assert [o["crop_box"] for o in ours] == [r["crop_box"] for r in ref]
    np.testing.assert_allclose([o["point_coords"] for o in ours], [r["point_coords"] for r in ref])


def test_full_res_filter_and_batch_size_give_the_same_masks(colour_sam) -> None:  # type: ignore[no-untyped-def]
    _, enc, dec = colour_sam
    cfg = AmgConfig(points_per_side=8, pred_iou_thresh=0.0, stability_score_thresh=0.6)
    img = _image(200, 150, seed=3)
    a = MaskGenerator(enc, dec, cfg, prompt_batch=7).generate_tensors(img)
    b = MaskGenerator(enc, dec, cfg, prompt_batch=1000, full_res_filter=True).generate_tensors(img)
    assert len(a) == len(b) > 5
    assert torch.equal(a.masks, b.masks) and torch.equal(a.boxes, b.boxes)
    both = MaskGenerator(enc, dec, cfg, prompt_batch=64).generate_batch([img, _image(120, 260, seed=4)])
    assert torch.equal(both[0].masks, a.masks)


def test_default_prompt_batch_is_cache_sized_on_cpu_and_memory_aware_on_cuda(colour_sam, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    cpu = torch.device("cpu")
    assert ops.default_prompt_batch(cpu, (64, 64), 256) == 4  # vit_b: one (4, 4096, 256) fp32 tensor = 16 MiB
    # onnxruntime's exported decoders (MatMul upscaling, GEMM-bound): 128 MiB, 32 prompts for vit_b
    assert ops.default_prompt_batch(cpu, (64, 64), 256, "ort") == 32
    assert ops.default_prompt_batch(cpu, (64, 64), 256, "torch") == 4
    assert ops.default_prompt_batch(cpu, (16, 16), 128) == 128  # the toy SAM
    assert ops.default_prompt_batch(cpu, (128, 128), 1024) == 1  # never 0
    assert ops.default_prompt_batch(cpu, (2, 2), 8) == 256  # capped
    monkeypatch.setattr(ops, "available_memory", lambda device: 20 * 10**9)
    assert ops.default_prompt_batch(torch.device("cuda"), (64, 64), 256) == 112
    _, enc, dec = colour_sam  # (1, 48, 16, 16) embeddings
    gen = MaskGenerator(
        enc, dec, AmgConfig(points_per_side=4, pred_iou_thresh=0.0, stability_score_thresh=0.0)
    )
    gen.generate_tensors(_image(64, 64, seed=5))
    assert gen.batch_used == ops.default_prompt_batch(cpu, (16, 16), 48) == 256


def test_output_modes_and_maskset(colour_sam) -> None:  # type: ignore[no-untyped-def]
    from pycocotools import mask as mask_utils

    _, enc, dec = colour_sam
    cfg = AmgConfig(points_per_side=6, pred_iou_thresh=0.0, stability_score_thresh=0.0)
    img = _image(90, 120, seed=5)
    binary = MaskGenerator(enc, dec, cfg).generate(img)
    coco = MaskGenerator(enc, dec, cfg, output_mode="coco_rle").generate(img)
    assert len(binary) == len(coco) > 0
    for b, c in zip(binary, coco, strict=True):
        assert isinstance(c["segmentation"]["counts"], str)
        np.testing.assert_array_equal(mask_utils.decode(c["segmentation"]).astype(bool), b["segmentation"])
        assert b["area"] == int(b["segmentation"].sum())
    ms = MaskGenerator(enc, dec, cfg)(img)
    assert len(ms) == len(binary) and ms.masks.shape[1:] == (90, 120) and ms.masks.dtype == torch.bool
    np.testing.assert_allclose(ms.boxes.numpy(), [b["bbox"] for b in binary])


def test_bad_arguments_raise_config_errors(colour_sam) -> None:  # type: ignore[no-untyped-def]
    _, enc, dec = colour_sam
    with pytest.raises(ConfigError, match="output_mode"):
        MaskGenerator(enc, dec, AmgConfig(), output_mode="png")
    with pytest.raises(ConfigError, match="prompt_batch"):
        MaskGenerator(enc, dec, AmgConfig(), prompt_batch=0)
    with pytest.raises(ConfigError, match="image"):
        MaskGenerator(enc, dec, AmgConfig(points_per_side=2)).generate(np.zeros((8, 8), np.uint8))


@pytest.mark.filterwarnings("ignore:SAM 'tiny' has NO checkpoint")
def test_tiny_sam_on_export_spec_engines() -> None:
    """The real tiny SAM through the ``sam_encoder`` / ``sam_decoder_batched`` spec modules."""
    from zsplg_fast.engines.torch_engine import TorchEngine
    from zsplg_fast.export.specs import get_spec
    from zsplg_fast.models import build_sam

    torch.manual_seed(0)
    sam = build_sam("tiny")
    enc, dec = (
        TorchEngine(p.module, p.inputs, p.outputs)
        for p in (get_spec("sam_encoder").bind(sam), get_spec("sam_decoder_batched").bind(sam))
    )
    kw = {"pred_iou_thresh": 0.0, "stability_score_thresh": 0.0, "box_nms_thresh": 1.0}
    img = _image(150, 200, seed=7)
    ref = SamAutomaticMaskGenerator(sam, points_per_side=6, **kw).generate(img)
    ours = MaskGenerator(enc, dec, AmgConfig(points_per_side=6, **kw)).generate(img)
    assert len(ref) == len(ours) == 3 * 36  # NMS off: every prompt's three masks
    assert _best_iou([r["segmentation"] for r in ref], [o["segmentation"] for o in ours]) >= 0.98
