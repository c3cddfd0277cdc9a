"""Both readings of zero-shot fusion on constructed predictions."""

from __future__ import annotations

import pytest
import torch

from zsplg_fast.errors import ConfigError
from zsplg_fast.train.losses import IGNORE, UnlabeledTargets, enhanced_label, unlabeled_loss
from zsplg_fast.train.unimatch import LOSS_FUSION


def probs(rows: list[list[float]]) -> torch.Tensor:
    """(C, 1, W) probabilities from per-pixel class distributions."""
    return torch.tensor(rows, dtype=torch.float32).T.unsqueeze(1)


# 4 pixels, 3 classes: confident class 2, unconfident class 1, confident class 0, unconfident class 0
P = probs([[0.01, 0.01, 0.98], [0.2, 0.5, 0.3], [0.97, 0.02, 0.01], [0.4, 0.3, 0.3]])
ZS = torch.tensor([[1, 2, 1, IGNORE]])


def test_enhanced_label_confident_prediction_else_zero_shot() -> None:
    got = enhanced_label(P, ZS, threshold=0.95, fallback="zero_shot")
    # pixel 3 has no zero-shot label (255) → the prediction
    assert got.tolist() == [[2, 2, 0, 0]]
    assert got.dtype == torch.uint8


def test_enhanced_label_other_fallbacks() -> None:
    assert enhanced_label(P, ZS, 0.95, "prediction").tolist() == [[2, 1, 0, 0]]
    assert enhanced_label(P, ZS, 0.95, "ignore").tolist() == [[2, IGNORE, 0, IGNORE]]
    assert enhanced_label(P, None, 0.95, "zero_shot").tolist() == [[2, 1, 0, 0]]
    # threshold 0 keeps every prediction
    assert enhanced_label(P, ZS, 0.0, "zero_shot").tolist() == [[2, 1, 0, 0]]
    with pytest.raises(ConfigError):
        enhanced_label(P, ZS, 0.95, "nearest")


def test_enhanced_label_background_scope_only_adds_to_zero_shot_background() -> None:
    # 5 pixels: confident 2 over zero-shot 1 (named: kept), confident 2 over zero-shot background (added),
    # confident background over zero-shot 1 (named: not erased), unconfident over background (kept),
    # confident 1 where there is no zero-shot label (taken, as with scope "all")
    p = probs([[0.01, 0.01, 0.98], [0.1, 0.1, 0.8], [0.97, 0.02, 0.01], [0.4, 0.3, 0.3], [0.1, 0.9, 0.0]])
    zs = torch.tensor([[1, 0, 1, 0, IGNORE]])
    assert enhanced_label(p, zs, 0.75, "zero_shot", "background").tolist() == [[1, 2, 1, 0, 1]]
    assert enhanced_label(p, zs, 0.75, "zero_shot", "all").tolist() == [[2, 2, 0, 0, 1]]
    assert enhanced_label(p, None, 0.75, "zero_shot", "background").tolist() == [[2, 2, 0, 0, 1]]
    with pytest.raises(ConfigError, match="fallback zero_shot"):
        enhanced_label(p, zs, 0.75, "prediction", "background")
    with pytest.raises(ConfigError, match="unknown scope"):
        enhanced_label(p, zs, 0.75, "zero_shot", "objects")


def test_online_reading_learns_zero_shot_where_unconfident_two_stage_does_not() -> None:
    logits = torch.log(P).unsqueeze(0)  # (1, C, 1, W): softmax(logits) == P
    conf, label = P.max(dim=0)
    t = UnlabeledTargets(
        label.unsqueeze(0), conf.unsqueeze(0), torch.zeros(1, 1, 4, dtype=torch.long), ZS.unsqueeze(0)
    )
    online = unlabeled_loss(logits, t, 0.95, LOSS_FUSION["online"], smoothing=0.0)
    two_stage = unlabeled_loss(logits, t, 0.95, LOSS_FUSION["two_stage"], smoothing=0.0)
    # confident pixels 0, 2 (−log 0.98, −log 0.97); online adds pixel 1 → zero-shot class 2 (−log 0.3)
    base = -(torch.log(torch.tensor(0.98)) + torch.log(torch.tensor(0.97)))
    assert two_stage.item() == pytest.approx(base.item() / 4, rel=1e-5)
    assert online.item() == pytest.approx((base - torch.log(torch.tensor(0.3))).item() / 4, rel=1e-5)
    assert LOSS_FUSION["none"] == "none"
