"""Learning: a short CPU UniMatch run on the synthetic shapes raises val mIoU well above the untrained
model's (the tiny backbone learns background vs shapes within ~100 iterations; shape classes take longer)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch

from zsplg_fast.config.train import TrainConfig
from zsplg_fast.data.sources import open_source
from zsplg_fast.models.segmenter import build_segmenter
from zsplg_fast.train.evaluate import evaluate_model
from zsplg_fast.train.runtime import seed_all
from zsplg_fast.train.unimatch import train_unimatch


def test_unimatch_learns_on_synthetic_shapes(
    synth: Path, tiny_cfg: Callable[..., TrainConfig], tmp_path: Path
) -> None:
    cfg = tiny_cfg(**{"unimatch.batch_size": 4, "unimatch.max_iters": 120, "optim.lr": 0.02})
    val = open_source(f"synthetic:{synth}", "val").samples
    seed_all(cfg.run.seed)  # the same initial weights train_unimatch starts from
    untrained = evaluate_model(build_segmenter("tiny", 4), val, 4).report()
    result = train_unimatch(cfg, tmp_path / "run")
    trained = result["report"]
    print(
        f"untrained mIoU {untrained['miou']:.3f}, trained {trained['miou']:.3f} in {result['seconds']:.0f} s"
    )
    assert result["complete"] and torch.isfinite(torch.tensor(trained["miou"]))
    assert trained["miou"] >= untrained["miou"] + 0.15
    assert trained["per_class"][0]["iou"] > 0.8  # background found
    assert max(c["iou"] for c in trained["per_class"][1:]) > 0.2  # and shapes
