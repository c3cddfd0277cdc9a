"""The pipeline's stages. Each is a function ``(cfg, ctx, folder) -> result dict`` plus the config it
depends on; the runner fingerprints that config with the fingerprints of the stages it consumes."""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from zsplg_fast.config import Config, to_dict
from zsplg_fast.config.train import TrainConfig
from zsplg_fast.errors import ConfigError

Result = dict[str, Any]
Context = dict[str, Result]  # stage name → result of that stage in this run


@dataclass(frozen=True)
class StageDef:
    """``deps``: stages whose results this one reads; ``keys``: config it depends on."""

    name: str
    deps: tuple[str, ...]
    keys: Callable[[Config], Any]
    run: Callable[[Config, Context, Path], Result]


def _resumable(folder: Path) -> bool:
    from zsplg_fast.train.loop import LATEST

    return (folder / LATEST).is_file()


def _need(ctx: Context, stage: str, by: str) -> Result:
    if stage not in ctx:
        raise ConfigError("pipeline.stages", by, f"stage '{by}' needs stage '{stage}' in the same run")
    return ctx[stage]


def train_config(cfg: Config, **data: Any) -> TrainConfig:
    """``cfg.train`` with the dataset defaulted to ``cfg.data.source`` and ``data`` overrides applied."""
    t = cfg.train
    source = t.data.source or cfg.data.source
    if source is None:
        raise ConfigError("data.source", None, "the pipeline needs a dataset", valid="voc:DIR, synthetic:DIR")
    return replace(t, data=replace(t.data, source=source, **data))


def score_labels(samples: list[Any], labels: Path, class_names: list[str]) -> Result:
    """mIoU of ``labels/<id>.png`` against each sample's ground truth (samples without one are skipped)."""
    from zsplg_fast.data import read_label
    from zsplg_fast.train.metrics import ConfusionMatrix

    cm = ConfusionMatrix(len(class_names))
    n = 0
    for s in samples:
        if not s.has_label:
            continue
        path = labels / f"{s.id}.png"
        gt_name = str(s.label_path or f"{s.image_path} (generated label)")
        cm.update(read_label(path), s.load_label(len(class_names)), name=str(path), gt_name=gt_name)
        n += 1
    return {**cm.report(class_names), "images_with_gt": n} if n else {"miou": None, "images_with_gt": 0}


def _zero_shot(cfg: Config, ctx: Context, folder: Path) -> Result:
    from zsplg_fast.data import open_source
    from zsplg_fast.labeling.run import label_dataset

    tcfg = train_config(cfg)
    lcfg = replace(
        cfg,
        data=replace(cfg.data, source=tcfg.data.source, split=tcfg.data.unlabeled),
        label=replace(cfg.label, out=str(folder), overlays=cfg.pipeline.overlays),
    )
    summary = label_dataset(lcfg)
    samples = open_source(tcfg.data.source, tcfg.data.unlabeled).samples
    classes = json.loads((folder / "manifest.json").read_text())["classes"]
    report = score_labels(samples, folder / "labels", classes)
    return {
        "labels": str(folder / "labels"),
        "summary": summary.to_dict(),
        "miou": report["miou"],
        "report": report,
    }


def _unimatch(cfg: Config, ctx: Context, folder: Path) -> Result:
    from zsplg_fast.train.unimatch import train_unimatch

    zs = ctx.get("zero_shot", {}).get("labels") if cfg.train.unimatch.fusion == "online" else None
    return train_unimatch(train_config(cfg, zero_shot=zs), folder, resume=_resumable(folder))


def _enhance(cfg: Config, ctx: Context, folder: Path) -> Result:
    from zsplg_fast.train.enhance import enhance

    uni = _need(ctx, "unimatch", "enhance")
    zs = ctx.get("zero_shot", {}).get("labels")
    return enhance(train_config(cfg, zero_shot=zs), uni["checkpoint"], folder)


def _final(cfg: Config, ctx: Context, folder: Path) -> Result:
    from zsplg_fast.train.supervised import train_supervised

    enh = _need(ctx, "enhance", "final")
    tcfg = train_config(cfg, enhanced=enh["labels"])
    tcfg = replace(tcfg, supervised=replace(tcfg.supervised, use_enhanced=True))
    return train_supervised(tcfg, folder, resume=_resumable(folder))


def _baseline(cfg: Config, ctx: Context, folder: Path) -> Result:
    from zsplg_fast.train.supervised import train_supervised

    tcfg = train_config(cfg)
    tcfg = replace(tcfg, supervised=replace(tcfg.supervised, use_enhanced=False))
    return train_supervised(tcfg, folder, resume=_resumable(folder))


def _evaluate(cfg: Config, ctx: Context, folder: Path) -> Result:
    from zsplg_fast.train.evaluate import evaluate_split

    final = _need(ctx, "final", "evaluate")
    tcfg = train_config(cfg)
    report = evaluate_split(tcfg, final["checkpoint"], out=folder / "report.json")
    if cfg.pipeline.overlays and os.environ.get("RANK", "0") == "0":
        from zsplg_fast.bench.overlays import split_grid

        grid = split_grid(tcfg, final["checkpoint"], None, cfg.pipeline.overlays, folder / "overlays.png")
        report = {**report, "overlays": str(grid)}
    return report


def _export(cfg: Config, ctx: Context, folder: Path) -> Result:
    from zsplg_fast.export.pipeline import run_export

    final = _need(ctx, "final", "export")
    ecfg = replace(
        cfg, export=replace(cfg.export, out_dir=str(folder), segmenter_checkpoint=final["checkpoint"])
    )
    rows = run_export("segmenter", ecfg)
    return {"artifacts": [dataclasses.asdict(r) for r in rows]}


def _label_weights(cfg: Config) -> dict[str, str]:
    """The proposer's and CLIP's weights fingerprints (file sha256, cached): a checkpoint replaced under
    the same path is a new zero-shot stage, not the old folder's labels reused."""
    from zsplg_fast.models import resolve_sam_checkpoint, weights_fingerprint
    from zsplg_fast.models.clip import clip_weights_fingerprint

    return {
        "sam": weights_fingerprint(resolve_sam_checkpoint(cfg.sam.variant, cfg.sam.checkpoint)),
        "clip": clip_weights_fingerprint(cfg.clip.model, cfg.clip.pretrained),
    }


def _train_keys(cfg: Config) -> Any:
    t = cfg.train
    return {k: to_dict(getattr(t, k)) for k in ("model", "data", "optim", "run")} | {
        "source": cfg.data.source
    }


STAGES: dict[str, StageDef] = {
    s.name: s
    for s in (
        StageDef(
            "zero_shot",
            (),
            lambda c: {
                "source": c.data.source,
                "unlabeled": c.train.data.unlabeled,
                **{k: to_dict(getattr(c, k)) for k in ("sam", "clip", "amg", "classify")},
                "masks": c.label.masks,
                "precision": c.label.precision,
                "weights": _label_weights(c),
            },
            _zero_shot,
        ),
        StageDef(
            "unimatch", ("zero_shot",), lambda c: _train_keys(c) | {"u": to_dict(c.train.unimatch)}, _unimatch
        ),
        StageDef("enhance", ("unimatch", "zero_shot"), lambda c: to_dict(c.train.enhance), _enhance),
        StageDef(
            "final", ("enhance",), lambda c: _train_keys(c) | {"s": to_dict(c.train.supervised)}, _final
        ),
        StageDef("baseline", (), lambda c: _train_keys(c) | {"s": to_dict(c.train.supervised)}, _baseline),
        StageDef("evaluate", ("final",), lambda c: to_dict(c.train.eval), _evaluate),
        StageDef("export", ("final",), lambda c: to_dict(c.export), _export),
    )
}
