"""bf16 labeling fidelity on trained weights (toy SAM + toy CLIP, toy world), against fp32: the floors."""

from __future__ import annotations

import pytest

from zsplg_fast.utils.cpu import BF16_FLAGS, cpu_bf16_flags

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


@pytest.mark.skipif(not cpu_bf16_flags(), reason=f"CPU bf16 needs one of {BF16_FLAGS} (refused without)")
def test_bf16_labeling_fidelity_floors_on_toy_world() -> None:
    from zsplg_fast.bench.labeling_toy import ToyFidelityConfig, toy_fidelity

    # reference B = fast AMG in fp32, whose masks and labels equal upstream's (test_amg_shared, test_build)
    cfg = ToyFidelityConfig(images=2, grid=16, amg_masks=True)
    out = toy_fidelity(["E"], cfg, reference="B", log=lambda _m: None)
    e = out["variants"]["E"]
    # all 16*16*3 prompt masks of each image (before filtering), paired with fp32's: measured 0.9836
    assert e["prompt_masks_per_image"] == 768
    assert e["prompt_mean_iou"] >= 0.98 and e["prompt_min_image_iou"] >= 0.975, e
    # AMG masks after NMS at thresholds 0 (hundreds per image), each fp32 mask's best match: measured
    # 0.9856 with the mask logits in fp32 (0.9796 with them in bf16), and the mask count kept
    assert e["images_counted"] == 2 and e["mean_best_iou"] >= 0.98, e
    assert 0.98 <= e["count_ratio"] <= 1.02, e
    assert abs(e["label_miou_diff_points"]) <= 0.5, e
    assert out["reference"]["label_miou"] > 0.5  # the toy labeler names shapes (not a degenerate map)


def test_prompt_masks_feed_the_generators_per_image_feeds() -> None:
    """``prompt_masks`` (the toy fidelity's per-prompt masks) takes the generator's per-image feeds as they
    come from ``_encode`` (a dict since SAM 2): every grid prompt's 3 masks, as the decoder computes them."""
    import numpy as np
    import torch

    from zsplg_fast.bench.labeling_toy import prompt_masks
    from zsplg_fast.bench.synthetic_sam import build_colour_sam, sam_module_engines
    from zsplg_fast.config.labeling import AmgConfig
    from zsplg_fast.labeling.amg import MaskGenerator

    sam = build_colour_sam(256)
    gen = MaskGenerator(*sam_module_engines(sam), AmgConfig(points_per_side=4))
    image = np.random.default_rng(0).integers(0, 256, (96, 128, 3), dtype=np.uint8)
    masks = prompt_masks(gen, image)
    assert masks.shape == (4 * 4 * 3, 96, 128) and masks.dtype == torch.bool
    assert 0 < int(masks.sum()) < masks.numel()  # region masks, not empty or full
