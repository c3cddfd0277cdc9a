"""Issue 21.5: ``batch_size: 1`` trains (it crashed in BatchNorm of DeepLabV3+'s ASPP image-pooling
branch, "Expected more than 1 value per channel"), and no partial batch of one ever reaches training."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch

from zsplg_fast.config.train import TrainConfig
from zsplg_fast.models.segmenter import ASPPPooling, build_segmenter
from zsplg_fast.train.datasets import EpochSampler, make_loader
from zsplg_fast.train.supervised import train_supervised


def test_pooling_branch_with_one_image_uses_running_statistics() -> None:
    torch.manual_seed(0)
    branch = ASPPPooling(8, 4)
    x = torch.randn(1, 8, 5, 6)
    bn = branch.gap[2]
    with torch.no_grad():
        bn.running_mean.uniform_(-1, 1)
        bn.running_var.uniform_(0.5, 2)
    before = bn.running_mean.clone()
    y = branch.train()(x)  # raised ValueError before
    assert y.shape == (1, 4, 5, 6) and torch.isfinite(y).all()
    assert torch.equal(bn.running_mean, before)  # frozen for the one-image batch
    assert torch.allclose(y, branch.eval()(x))  # what evaluation computes
    y.sum().backward()
    assert bn.weight.grad is not None and branch.gap[1].weight.grad.abs().sum() > 0  # still trains
    branch.train()(torch.randn(2, 8, 5, 6))  # two or more: normalised by the batch, stats updated
    assert not torch.equal(bn.running_mean, before)


def test_whole_model_trains_a_batch_of_one() -> None:
    torch.manual_seed(0)
    model = build_segmenter("tiny", 3).train()
    out = model(torch.randn(1, 3, 64, 64))
    out.mean().backward()
    assert out.shape == (1, 3, 64, 64)


def test_supervised_training_with_batch_size_1(tiny_cfg: Callable[..., TrainConfig], tmp_path: Path) -> None:
    cfg = tiny_cfg(**{"supervised.batch_size": 1, "supervised.max_iters": 3})
    result = train_supervised(cfg, tmp_path / "run")
    assert result["complete"] and (tmp_path / "run" / "final.pth").is_file()


def test_no_partial_batch_of_one_reaches_training() -> None:
    """5 images in batches of 2 (and 7 over 2 processes): whole batches only, the remainder dropped."""
    data = [torch.zeros(3, 4, 4)] * 7
    for n, world in ((5, 1), (7, 2)):
        for rank in range(world):
            sampler = EpochSampler(n, 2, 0, 0, 0, world=world, rank=rank)
            sizes = [len(b[0]) for b in make_loader(_Set(data[:n]), sampler, 0, False)]
            assert sizes and set(sizes) == {2}, (n, world, sizes)


class _Set(torch.utils.data.Dataset):
    def __init__(self, items: list[torch.Tensor]) -> None:
        self.items = items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, key: tuple[int, int]) -> tuple[torch.Tensor, int]:
        return self.items[key[0]], key[0]
