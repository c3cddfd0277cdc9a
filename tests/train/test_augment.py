"""UniMatch augmentations and datasets: padding values, ranges, determinism, geometry shared by the
zero-shot label, and the resumable epoch sampler."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from zsplg_fast.data.sources import Sample, open_source
from zsplg_fast.train import transforms as T
from zsplg_fast.train.datasets import EpochSampler, LabeledSet, UnlabeledSet


def test_crop_pads_image_with_0_and_mask_with_fill() -> None:
    img = Image.fromarray(np.full((10, 20, 3), 200, np.uint8))
    mask = Image.fromarray(np.ones((10, 20), np.uint8))
    out_img, out_mask = T.random_crop(img, mask, 32, np.random.default_rng(0), fill=T.PAD_UNLABELED)
    a, m = np.array(out_img), np.array(out_mask)
    assert (
        a.shape == (32, 32, 3)
        and (a[:10, :20] == 200).all()
        and (a[10:] == 0).all()
        and (a[:, 20:] == 0).all()
    )
    assert (m[:10, :20] == 1).all() and (m[10:] == 254).all() and (m[:, 20:] == 254).all()


def test_resize_long_side_range() -> None:
    img, mask = Image.new("RGB", (100, 50)), Image.new("L", (100, 50))
    rng = np.random.default_rng(0)
    sides = [T.random_resize(img, mask, rng)[0].size for _ in range(200)]
    assert min(w for w, _ in sides) >= 50 and max(w for w, _ in sides) <= 200
    assert all(abs(h - w / 2) <= 1 for w, h in sides)
    narrow = [T.random_resize(img, mask, rng, (0.4, 0.8))[0].size[0] for _ in range(200)]
    assert min(narrow) >= 40 and max(narrow) <= 80 and max(narrow) - min(narrow) > 20


def test_cutmix_box_area_ratio_and_probability() -> None:
    rng = np.random.default_rng(0)
    boxes = [T.cutmix_box(100, rng) for _ in range(400)]
    on = [b for b in boxes if b.any()]
    assert 0.4 < len(on) / len(boxes) < 0.6
    for b in on:
        ys, xs = torch.nonzero(b, as_tuple=True)
        h, w = int(ys.max() - ys.min() + 1), int(xs.max() - xs.min() + 1)
        assert h * w == int(b.sum())  # a filled rectangle
        assert 0.015 <= h * w / 100**2 <= 0.40 and 0.25 <= h / w <= 1 / 0.25


def test_strong_view_is_deterministic_per_seed() -> None:
    img = Image.fromarray(np.random.default_rng(1).integers(0, 255, (32, 32, 3), dtype=np.uint8))
    a = np.array(T.strong(img, np.random.default_rng(5)))
    assert np.array_equal(a, np.array(T.strong(img, np.random.default_rng(5))))
    assert any(not np.array_equal(a, np.array(T.strong(img, np.random.default_rng(s)))) for s in range(6, 10))


def test_zero_shot_label_follows_the_same_geometry(synth: Path) -> None:
    samples = open_source(f"synthetic:{synth}", "unlabeled").samples
    # with the ground truth as "zero-shot" labels, the unlabeled item's weak view and zero-shot map equal
    # the labeled pipeline's image and mask for the same seed (same resize / crop / flip draws)
    u = UnlabeledSet(samples, 160, synth / "SegmentationClass")  # 160 > 128·scale sometimes: padding
    x = LabeledSet(samples, 160)
    padded = 0
    for i in range(6):
        img_w, s1, s2, ignore, _, _, zs, idx = u[(i, 100 + i)]
        img, mask, _ = x[(i, 100 + i)]
        assert torch.equal(img_w, img) and torch.equal(zs, mask) and idx == i
        assert torch.equal(ignore == 255, mask == 255)  # GT has no 255 of its own here: all padding
        assert not torch.equal(s1, img_w) or not torch.equal(s2, img_w)
        padded += int((ignore == 255).any())
    assert padded > 0


def test_datasets_resize_by_the_configured_scale(synth: Path, tiny_cfg) -> None:  # type: ignore[no-untyped-def]
    cfg = tiny_cfg(**{"data.scale_range": [0.25, 0.25]})
    assert cfg.data.scale == (0.25, 0.25)
    samples = open_source(f"synthetic:{synth}", "unlabeled").samples[:3]
    # 128 px images in a 128 crop: × 0.25 leaves a 32 px image, so ≥ 15/16 of the crop is padding (255)
    small_l = LabeledSet(samples, 128, scale=cfg.data.scale)
    small_u = UnlabeledSet(samples, 128, synth / "SegmentationClass", scale=cfg.data.scale)
    full = LabeledSet(samples, 128, scale=(1.0, 1.0))
    for i in range(3):
        assert (small_l[(i, i)][1] == 255).float().mean() >= 15 / 16 - 0.01
        assert (small_u[(i, i)][3] == 255).float().mean() >= 15 / 16 - 0.01
        assert (full[(i, i)][1] == 255).sum() == 0


def test_labeled_set_repeats_to_nsample() -> None:
    samples = [Sample(str(i), Path(f"{i}.jpg")) for i in range(3)]
    ds = LabeledSet(samples, 8, nsample=7)
    assert [s.id for s in ds.samples] == ["0", "1", "2", "0", "1", "2", "0"]


def test_epoch_sampler_shards_skips_and_reshuffles() -> None:
    n, batch = 10, 2
    ranks = [list(EpochSampler(n, batch, 0, 0, 1, world=2, rank=r)) for r in range(2)]
    idx = [i for r in ranks for i, _ in r]
    assert len(idx) == 2 * EpochSampler.batches_per_epoch(n, batch, 2) * batch == 8
    assert len(set(idx)) == 8  # 5 per rank padded to whole batches: 4 each, disjoint
    full = list(EpochSampler(n, batch, 0, 3, 1))
    assert list(EpochSampler(n, batch, 0, 3, 1, skip_batches=2)) == full[2 * batch :]
    assert [i for i, _ in full] != [i for i, _ in EpochSampler(n, batch, 0, 4, 1)]
    # same order stream, other augmentation stream: the 'official' mix batch order
    mix = list(EpochSampler(n, batch, 0, 3, 7, order_stream=1))
    assert [i for i, _ in mix] == [i for i, _ in full] and [s for _, s in mix] != [s for _, s in full]


@pytest.mark.parametrize("size", [(33, 47), (128, 96)])
def test_normalize_and_mask(size: tuple[int, int]) -> None:
    img = Image.fromarray(np.zeros((*size, 3), np.uint8))
    t = T.normalize(img)
    assert t.shape == (3, *size) and t.dtype == torch.float32
    assert t[0, 0, 0].item() == pytest.approx(-0.485 / 0.229, rel=1e-5)
    assert T.to_mask(np.array([[1, 255]], np.uint8)).dtype == torch.int64
