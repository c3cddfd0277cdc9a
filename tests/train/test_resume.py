"""Exact resume: N + M iterations straight equal N, stop, resume, M (weights, optimiser, history)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from zsplg_fast.config.train import TrainConfig
from zsplg_fast.errors import OutputExistsError
from zsplg_fast.train.supervised import train_supervised
from zsplg_fast.train.unimatch import train_unimatch

# batch 8 over 24 unlabeled images: 3 iterations per epoch, so the stop (4) lies mid-epoch 1 and the
# run crosses two epoch ends with a val evaluation each.
OVERRIDES = {
    "unimatch.batch_size": 8,
    "unimatch.max_iters": 7,
    "unimatch.fusion": "online",
    "eval.every_epochs": 1,
}


def _load(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=False)


def test_resume_equals_straight_run(
    synth: Path, tiny_cfg: Callable[..., TrainConfig], tmp_path: Path
) -> None:
    zs = str(synth / "SegmentationClass")
    straight = train_unimatch(tiny_cfg(**OVERRIDES, **{"data.zero_shot": zs}), tmp_path / "a")
    first = train_unimatch(
        tiny_cfg(**OVERRIDES, **{"data.zero_shot": zs, "run.stop_after": 4}), tmp_path / "b"
    )
    assert not first["complete"] and first["iterations"] == 4
    assert not (tmp_path / "b" / "final.pth").exists()
    torch.manual_seed(1234)  # a resumed run must not depend on the caller's RNG state
    resumed = train_unimatch(tiny_cfg(**OVERRIDES, **{"data.zero_shot": zs}), tmp_path / "b", resume=True)
    assert straight["complete"] and resumed["complete"] and resumed["iterations"] == 7

    a, b = _load(tmp_path / "a" / "latest.pth"), _load(tmp_path / "b" / "latest.pth")
    for k, v in a["state_dict"].items():
        assert torch.equal(v, b["state_dict"][k]), k
    oa, ob = a["train_state"]["optimizer"]["state"], b["train_state"]["optimizer"]["state"]
    assert all(torch.equal(oa[i]["momentum_buffer"], ob[i]["momentum_buffer"]) for i in oa)
    assert [h["miou"] for h in straight["history"]] == [h["miou"] for h in resumed["history"]]
    assert len(straight["history"]) == 3  # epoch ends at 3 and 6, and the end at 7


def test_refuses_existing_run_without_resume_and_changed_config(
    tiny_cfg: Callable[..., TrainConfig], tmp_path: Path
) -> None:
    cfg = tiny_cfg(**{"supervised.max_iters": 2, "run.stop_after": 1})
    train_supervised(cfg, tmp_path / "s")
    with pytest.raises(OutputExistsError, match="--resume"):
        train_supervised(cfg, tmp_path / "s")
    with pytest.raises(OutputExistsError, match="another config"):
        train_supervised(
            tiny_cfg(**{"supervised.max_iters": 2, "optim.lr": 0.5}), tmp_path / "s", resume=True
        )
    done = train_supervised(tiny_cfg(**{"supervised.max_iters": 2}), tmp_path / "s", resume=True)
    assert done["complete"] and (tmp_path / "s" / "final.pth").is_file()
    again = train_supervised(tiny_cfg(**{"supervised.max_iters": 2}), tmp_path / "s", resume=True)
    assert again["complete"] and again["iterations"] == 2  # a finished run resumes to a no-op


def test_keys_a_stage_ignores_do_not_block_resume(
    tiny_cfg: Callable[..., TrainConfig], tmp_path: Path
) -> None:
    # a pipeline fills data.enhanced after UniMatch; rerunning UniMatch must still resume its run
    train_unimatch(tiny_cfg(**{"unimatch.max_iters": 1}), tmp_path / "u")
    again = train_unimatch(
        tiny_cfg(**{"unimatch.max_iters": 1, "data.enhanced": "x"}), tmp_path / "u", resume=True
    )
    assert again["complete"] and again["iterations"] == 1
