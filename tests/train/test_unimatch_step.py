"""One UniMatch step on real augmented batches: weights move, the loss is finite, all-ignore is finite."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from torch.utils.data import default_collate

from zsplg_fast.config.train import RunConfig, TrainConfig, UniMatchConfig
from zsplg_fast.data.sources import open_source
from zsplg_fast.errors import TrainingError
from zsplg_fast.models.segmenter import build_segmenter
from zsplg_fast.train import unimatch as U
from zsplg_fast.train.datasets import LabeledSet, UnlabeledSet
from zsplg_fast.train.losses import IGNORE, CrossEntropy, UniMatchLoss
from zsplg_fast.train.runtime import setup_runtime


def batches(synth: Path, n: int = 2) -> tuple[list, list, list]:
    lab = open_source(f"synthetic:{synth}", "labeled").samples
    unl = open_source(f"synthetic:{synth}", "unlabeled").samples
    # the ground-truth folder stands in for zero-shot labels (same <id>.png layout)
    u = UnlabeledSet(unl, 64, synth / "SegmentationClass")
    x = LabeledSet(lab, 64)
    bx = default_collate([x[(i, 10 + i)] for i in range(n)])
    bu = default_collate([u[(i, 20 + i)] for i in range(n)])
    bm = default_collate([u[(i + n, 30 + i)] for i in range(n)])
    return list(bx), list(bu), list(bm)


@pytest.mark.parametrize("fusion", ["none", "online"])
def test_one_step_changes_weights_and_loss_is_finite(synth: Path, fusion: str) -> None:
    torch.manual_seed(0)
    model = build_segmenter("tiny", 4)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    bx, bu, bm = batches(synth)
    assert (bu[6] != IGNORE).any(), "zero-shot labels were carried through the augmentation"
    rt = setup_runtime(RunConfig(device="cpu"))
    res = U.unimatch_step(
        model, bx, bu, bm, CrossEntropy(), UniMatchConfig(conf_thresh=0.0, fusion=fusion), rt
    )
    assert torch.isfinite(res.loss) and res.loss.item() > 0
    assert res.loss_s1.item() > 0 and res.loss_fp.item() > 0  # τ = 0: every pixel is confident
    opt.zero_grad()
    res.loss.backward()
    opt.step()
    after = model.state_dict()
    changed = [
        k for k in before if before[k].dtype.is_floating_point and not torch.equal(before[k], after[k])
    ]
    assert any(k.startswith("backbone.") for k in changed) and "classifier.weight" in changed


def test_all_ignore_batch_gives_finite_loss(synth: Path) -> None:
    torch.manual_seed(0)
    model = build_segmenter("tiny", 4)
    bx, bu, bm = batches(synth)
    bx[1] = torch.full_like(bx[1], IGNORE)
    for b in (bu, bm):
        b[3] = torch.full_like(b[3], IGNORE)
    rt = setup_runtime(RunConfig(device="cpu"))
    res = U.unimatch_step(model, bx, bu, bm, CrossEntropy(), UniMatchConfig(fusion="online"), rt)
    assert torch.isfinite(res.loss) and res.loss.item() == 0.0
    res.loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_non_finite_loss_names_iteration_and_batch(
    tiny_cfg: Callable[..., TrainConfig], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = U.unimatch_loss

    def poisoned(*args: object, **kw: object) -> UniMatchLoss:
        res = real(*args, **kw)  # type: ignore[arg-type]
        res.loss = res.loss * float("nan")
        return res

    monkeypatch.setattr(U, "unimatch_loss", poisoned)
    with pytest.raises(TrainingError, match=r"unimatch iteration 0 .*(labeled|unlabeled)_\d+"):
        U.train_unimatch(tiny_cfg(**{"unimatch.max_iters": 2}), tmp_path / "run")
