"""Sample grids for evaluation: image | prediction | ground truth for N samples of a dataset.

``zsplg-fast evaluate --overlays N`` calls :func:`checkpoint_grid`; the label job builds its grid from
its own outputs with :func:`zsplg_fast.viz.write_grid` (prediction = the zero-shot label).
Predictions come from :func:`zsplg_fast.bench.segmenter.predict_label`, the evaluation's code path.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from torch import nn

from zsplg_fast.bench.segmenter import predict_label
from zsplg_fast.config.train import TrainConfig
from zsplg_fast.data.sources import Sample
from zsplg_fast.errors import ConfigError
from zsplg_fast.viz import GridItem, pick, write_grid


def evaluation_grid(
    model: nn.Module,
    samples: Sequence[Sample],
    n: int,
    path: str | Path,
    class_names: Sequence[str],
    palette: np.ndarray | None = None,
    mode: str = "original",
    window: int = 321,
    cell: int = 256,
) -> Path:
    """Predict ``n`` of ``samples`` with ``model`` (a DeepLabV3+ or an ``EngineSegmenter``) and write a grid
    PNG (one row per sample: image, prediction, ground truth when the sample has one). Returns the path."""
    items = []
    for s in pick(samples, n):
        image = s.load_image()
        items.append(GridItem(image, predict_label(model, image, mode, window), s.load_label(), s.id))
    return write_grid(path, items, class_names, palette, cell)


def checkpoint_grid(
    checkpoint: str | Path,
    samples: Sequence[Sample],
    n: int,
    path: str | Path,
    mode: str = "original",
    window: int = 321,
) -> Path:
    """:func:`evaluation_grid` for a saved segmenter checkpoint (class names from the checkpoint)."""
    from zsplg_fast.models.segmenter import load_checkpoint

    model, ckpt = load_checkpoint(checkpoint)
    names = ckpt.get("class_names") or [str(i) for i in range(model.config.num_classes)]
    return evaluation_grid(model, samples, n, path, names, None, mode, window)


def split_grid(cfg: TrainConfig, checkpoint: str | Path, split: str | None, n: int, path: str | Path) -> Path:
    """The grid ``zsplg-fast evaluate --checkpoint CKPT --overlays N`` writes: ``n`` samples of ``split``
    (default ``cfg.data.val``) of ``cfg.data.source``, predicted with the evaluation's mode and window."""
    from zsplg_fast.data import open_source

    name = split or cfg.data.val
    if cfg.data.source is None or name is None:
        raise ConfigError("train.data.source", cfg.data.source, "overlays need a dataset and a split")
    samples = open_source(cfg.data.source, name).samples
    return checkpoint_grid(checkpoint, samples, n, path, cfg.eval.mode, cfg.eval.window or cfg.data.crop_size)
