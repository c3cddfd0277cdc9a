"""Shared set-up for the training stages: splits and classes, the segmenter, SGD groups, poly lr."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from zsplg_fast.config.train import TrainConfig
from zsplg_fast.data.sources import Sample, open_source
from zsplg_fast.errors import ConfigError, DatasetError
from zsplg_fast.models.segmenter import build_segmenter, head_parameters
from zsplg_fast.train.datasets import label_file, labels_dir
from zsplg_fast.train.preflight import check_trainable, preflight
from zsplg_fast.train.runtime import Runtime

log = logging.getLogger("zsplg_fast.train")


def resolve_classes(spec: str, dataset_names: list[str] | None = None) -> list[str]:
    """Class names from ``spec``: 'auto' (the dataset's classes.txt), 'voc', 'coco', a count, or a file."""
    if spec == "auto":
        if not dataset_names:
            raise ConfigError(
                "train.data.classes", spec, "the dataset has no classes.txt", "voc, coco, a count or a file"
            )
        return [n.split("|")[0].strip() for n in dataset_names]
    if spec.isdigit() and int(spec) > 0:
        return [str(i) for i in range(int(spec))]
    from zsplg_fast.models.text import load_class_names  # lazy: pulls in open_clip

    return [synonyms[0] for synonyms in load_class_names(spec)]


@dataclass
class Splits:
    """The samples of each split and the class names."""

    labeled: list[Sample]
    unlabeled: list[Sample]
    val: list[Sample]
    class_names: list[str]

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


def _open(source: str, split: str | None) -> tuple[list[Sample], list[str] | None]:
    if split is None:
        return [], None
    ds = open_source(source, split)
    return list(ds.samples), ds.class_names


def open_splits(cfg: TrainConfig, need: tuple[str, ...] = ("labeled", "unlabeled", "val")) -> Splits:
    """Open the configured splits through the data layer (``open_source``) and resolve the classes."""
    d = cfg.data
    if d.source is None:
        raise ConfigError(
            "train.data.source", None, "no training dataset given", "voc:DIR, synthetic:DIR, coco:DIR"
        )
    wanted = {"labeled": d.labeled, "unlabeled": d.unlabeled, "val": d.val}
    parts = {k: _open(d.source, v if k in need else None) for k, v in wanted.items()}
    names = next((n for _, n in parts.values() if n), None)
    classes = resolve_classes(d.classes, names)
    if cfg.model.num_classes is not None and cfg.model.num_classes != len(classes):
        raise ConfigError(
            "train.model.num_classes",
            cfg.model.num_classes,
            f"differs from the {len(classes)} classes of train.data.classes={d.classes!r}",
            "null (take it from the classes)",
        )
    splits = Splits(parts["labeled"][0], parts["unlabeled"][0], parts["val"][0], classes)
    for name in need:
        if name != "val" and not getattr(splits, name):
            raise DatasetError(d.source, f"the '{name}' split is empty; check train.data.{name}")
    unlabeled_gt = [s for s in splits.labeled if not s.has_label]
    if unlabeled_gt:
        raise DatasetError(unlabeled_gt[0].image_path, "labeled split entry has no label file")
    return splits


def zero_shot_files(samples: list[Sample], folder: str | Path | None) -> dict[str, Path] | None:
    """sample id → its label file in ``folder`` (a label job's output or its labels/), or None."""
    if folder is None:
        return None
    d = labels_dir(folder)
    return {s.id: label_file(d, s.id) for s in samples}


def run_preflight(
    cfg: TrainConfig,
    rt: Runtime,
    samples: list[Sample],
    num_classes: int,
    extra: dict[str, Path] | None,
    trained: list[Sample] | None = None,
) -> dict:
    """Preflight on rank 0 (others wait for its verdict); a failure is raised on every rank.
    ``trained``: the samples the supervised loss is computed on; all of their masks ignore (255) is
    refused (:func:`~zsplg_fast.train.preflight.check_trainable`)."""
    if not cfg.data.preflight:
        return {"skipped": True}
    result: dict | str = {}
    if rt.is_main:
        try:
            result = preflight(
                samples,
                num_classes,
                cfg.data.preflight_cache,
                extra,
                cfg.data.max_long_side,
                max(cfg.data.workers, 2),
            )
            log.info("preflight: %s", {k: v for k, v in result.items() if k != "all_ignore"})
            check_trainable(trained or [], result)
        except DatasetError as e:
            result = str(e)
    result = rt.broadcast(result)
    if isinstance(result, str):
        raise DatasetError(cfg.data.source or "<dataset>", result)
    return {**result, "all_ignore": len(result.get("all_ignore", []))}  # the count, for the summary


def build_model(
    cfg: TrainConfig, num_classes: int, rt: Runtime, batch: int
) -> tuple[nn.Module, torch.optim.SGD, float]:
    """Segmenter on the device (SyncBN + DDP under torchrun) and its optimizer (see make_optimizer)."""
    m = cfg.model
    model = build_segmenter(
        m.backbone, num_classes, m.pretrained, m.dilations, m.replace_stride_with_dilation
    )
    model = rt.wrap(model)
    opt, lr = make_optimizer(cfg, model, rt.world, batch)
    return model, opt, lr


def make_optimizer(
    cfg: TrainConfig, model: nn.Module, world: int, batch: int
) -> tuple[torch.optim.SGD, float]:
    """SGD(momentum, wd), groups [backbone: lr, head: lr × lr_multi] (follows UniMatch unimatch.py).

    ``lr`` is scaled by world × batch / reference_batch when ``optim.lr_scaling='linear'``; returns
    (optimizer, scaled backbone lr).
    """
    o = cfg.optim
    lr = o.lr * (world * batch / o.reference_batch if o.lr_scaling == "linear" else 1.0)
    backbone, head = head_parameters(model)
    opt = torch.optim.SGD(
        [{"params": backbone, "lr": lr}, {"params": head, "lr": lr * o.lr_multi}],
        lr=lr,
        momentum=o.momentum,
        weight_decay=o.weight_decay,
    )
    return opt, lr


def poly_lr(base: float, it: int, total: int, power: float) -> float:
    """base · (1 − it/total)^power; ``it`` in [0, total)."""
    return base * (1.0 - min(it, total) / max(total, 1)) ** power
