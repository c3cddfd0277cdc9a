"""UniMatch losses on hand-built tensors: every expected value is computed by hand from the logits."""

from __future__ import annotations

import math

import pytest
import torch

from zsplg_fast.train.losses import (
    IGNORE,
    CrossEntropy,
    ProbOhemCrossEntropy,
    UnlabeledTargets,
    paste_images,
    targets_from_logits,
    unimatch_loss,
    unlabeled_loss,
)


def ce(logits: list[float], k: int) -> float:
    """-log softmax(logits)[k], by hand."""
    return math.log(sum(math.exp(v) for v in logits)) - logits[k]


def ls_ce(logits: list[float], k: int, eps: float) -> float:
    """Label-smoothed CE: (1 - eps)·CE(k) + eps·mean_c CE(c)."""
    c = len(logits)
    return (1 - eps) * ce(logits, k) + eps * sum(ce(logits, j) for j in range(c)) / c


# one row of 4 pixels, 2 classes: logits[pixel] = (l0, l1)
PIX = [(2.0, 0.0), (0.0, 0.5), (-1.0, 1.0), (3.0, -3.0)]


def logits_row(pix: list[tuple[float, float]]) -> torch.Tensor:
    """(1, 2, 1, W) from per-pixel pairs."""
    return torch.tensor(pix, dtype=torch.float32).T.reshape(1, 2, 1, len(pix))


def row(values: list[float], dtype: torch.dtype = torch.long) -> torch.Tensor:
    return torch.tensor(values, dtype=dtype).reshape(1, 1, len(values))


def targets(label: list[int], conf: list[float], ignore: list[int], zs: list[int]) -> UnlabeledTargets:
    return UnlabeledTargets(row(label), row(conf, torch.float32), row(ignore), row(zs))


def test_unlabeled_loss_plain_unimatch() -> None:
    t = targets([0, 1, 1, 0], [0.99, 0.5, 0.97, 0.99], [0, 0, 0, IGNORE], [1, 0, IGNORE, 1])
    got = unlabeled_loss(logits_row(PIX), t, conf_thresh=0.95, fusion="none")
    # confident and not padded: pixels 0 and 2; denominator: 3 non-padded pixels
    want = (ce(list(PIX[0]), 0) + ce(list(PIX[2]), 1)) / 3
    assert got.item() == pytest.approx(want, rel=1e-6)


def test_unlabeled_loss_online_fusion_uses_zero_shot_below_threshold() -> None:
    t = targets([0, 1, 1, 0], [0.99, 0.5, 0.90, 0.99], [0, 0, 0, IGNORE], [1, 0, IGNORE, 1])
    got = unlabeled_loss(logits_row(PIX), t, conf_thresh=0.95, fusion="online", smoothing=0.1)
    # pixel 0 confident → CE to pseudo label 0; pixel 1 unconfident → LS-CE to zero-shot 0;
    # pixel 2 unconfident, no zero-shot label → nothing; pixel 3 padded → nothing
    want = (ce(list(PIX[0]), 0) + ls_ce(list(PIX[1]), 0, 0.1)) / 3
    assert got.item() == pytest.approx(want, rel=1e-6)


def test_all_padded_unlabeled_loss_is_zero_not_nan() -> None:
    t = targets([0, 1, 1, 0], [1.0, 1.0, 1.0, 1.0], [IGNORE] * 4, [1, 0, 1, 1])
    for fusion in ("none", "online"):
        got = unlabeled_loss(logits_row(PIX), t, 0.95, fusion)
        assert torch.isfinite(got) and got.item() == 0.0


def test_targets_from_logits() -> None:
    t = targets_from_logits(logits_row(PIX), row([0, 0, 0, 0]), row([0, 0, 0, 0]))
    assert t.label.tolist() == [[[0, 1, 1, 0]]]
    p0 = math.exp(2) / (math.exp(2) + 1)
    assert t.conf[0, 0, 0].item() == pytest.approx(p0, rel=1e-6)


def test_cutmix_paste_moves_label_conf_ignore_and_zero_shot() -> None:
    weak = targets([0, 0, 0, 0], [0.1, 0.2, 0.3, 0.4], [0, 0, 0, 0], [1, 1, 1, 1])
    mix = targets([1, 1, 1, 1], [0.9, 0.8, 0.7, 0.6], [IGNORE, 0, IGNORE, 0], [0, 0, 0, IGNORE])
    box = row([0, 1, 1, 0], torch.float32)
    got = weak.paste(mix, box)
    assert got.label.tolist() == [[[0, 1, 1, 0]]]
    assert got.conf.flatten().tolist() == pytest.approx([0.1, 0.8, 0.7, 0.4])
    assert got.ignore.tolist() == [[[0, 0, IGNORE, 0]]]
    assert got.zero_shot.tolist() == [[[1, 0, 0, 1]]]
    img = torch.zeros(1, 3, 1, 4)
    img_mix = torch.ones(1, 3, 1, 4)
    assert paste_images(img, img_mix, box)[0, :, 0].tolist() == [[0, 1, 1, 0]] * 3


def test_unimatch_loss_combines_terms_with_cutmix_by_hand() -> None:
    # labeled: 2 pixels, one ignored
    pred_x = logits_row([(1.0, 0.0), (0.0, 0.0)])
    mask_x = row([1, IGNORE])
    pred_s1 = logits_row(PIX)
    pred_s2 = logits_row(list(reversed(PIX)))
    pred_fp = logits_row([(0.5, 0.0)] * 4)
    weak = targets([0, 1, 0, 1], [0.99, 0.96, 0.2, 0.99], [0, 0, 0, 0], [IGNORE] * 4)
    mix = targets([1, 1, 1, 1], [0.97, 0.97, 0.97, 0.1], [0, IGNORE, 0, 0], [IGNORE] * 4)
    box1 = row([1, 1, 0, 0], torch.float32)
    box2 = row([0, 0, 0, 1], torch.float32)
    res = unimatch_loss(
        CrossEntropy(), pred_x, mask_x, pred_s1, pred_s2, pred_fp, weak, mix, box1, box2, 0.95
    )
    loss_x = ce([1.0, 0.0], 1)
    # s1 targets: pixel0 mix(1, .97, ok), pixel1 mix(1, .97, padded), pixel2 weak(0, .2), pixel3 weak(1, .99)
    s1 = (ce(list(PIX[0]), 1) + ce(list(PIX[3]), 1)) / 3
    # s2 targets: pixels 0..2 weak (0 .99 / 1 .96 / 0 .2), pixel3 mix(1, 0.1) → confident: 0, 1
    rev = list(reversed(PIX))
    s2 = (ce(list(rev[0]), 0) + ce(list(rev[1]), 1)) / 4
    # fp: weak targets, confident pixels 0, 1, 3
    fp = (ce([0.5, 0.0], 0) + ce([0.5, 0.0], 1) + ce([0.5, 0.0], 1)) / 4
    assert res.loss_x.item() == pytest.approx(loss_x, rel=1e-6)
    assert res.loss_s1.item() == pytest.approx(s1, rel=1e-6)
    assert res.loss_s2.item() == pytest.approx(s2, rel=1e-6)
    assert res.loss_fp.item() == pytest.approx(fp, rel=1e-6)
    assert res.loss.item() == pytest.approx((loss_x + 0.25 * s1 + 0.25 * s2 + 0.5 * fp) / 2, rel=1e-6)
    assert res.mask_ratio == pytest.approx(3 / 4)


def test_labeled_ce_matches_torch_and_is_finite_when_all_ignored() -> None:
    logits = torch.randn(2, 3, 4, 5)
    target = torch.randint(0, 3, (2, 4, 5))
    target[0, 0] = IGNORE
    ref = torch.nn.CrossEntropyLoss(ignore_index=IGNORE)(logits, target)
    assert CrossEntropy()(logits, target).item() == pytest.approx(ref.item(), rel=1e-5)
    assert CrossEntropy()(logits, torch.full_like(target, IGNORE)).item() == 0.0


def test_ohem_keeps_only_hard_pixels() -> None:
    # four pixels; true-class probabilities 0.88, 0.5, 0.27, 0.73 (2 classes)
    pix = [(2.0, 0.0), (0.0, 0.0), (0.0, 1.0), (1.0, 0.0)]
    logits = logits_row(pix)
    target = row([0, 0, 0, 0])
    got = ProbOhemCrossEntropy(thresh=0.7, min_kept=0)(logits, target)
    want = (ce(list(pix[1]), 0) + ce(list(pix[2]), 0)) / 2  # p ≤ 0.7
    assert got.item() == pytest.approx(want, rel=1e-6)
    # min_kept 3 raises the threshold to the 3rd smallest probability (0.73)
    got3 = ProbOhemCrossEntropy(thresh=0.7, min_kept=3)(logits, target)
    want3 = (ce(list(pix[1]), 0) + ce(list(pix[2]), 0) + ce(list(pix[3]), 0)) / 3
    assert got3.item() == pytest.approx(want3, rel=1e-6)
