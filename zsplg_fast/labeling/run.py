"""`label` as a library call: config → source → shard → labeler → local or Ray job."""

from __future__ import annotations

import functools
from pathlib import Path

from zsplg_fast.config import Config
from zsplg_fast.data import open_source, shard
from zsplg_fast.errors import ConfigError
from zsplg_fast.labeling.build import build_labeler, labeler_factory
from zsplg_fast.labeling.job import JobSummary, LabelJob, ProgressFn


def label_dataset(cfg: Config, on_progress: ProgressFn | None = None) -> JobSummary:
    """Label ``cfg.data.source`` (optionally ``cfg.data.split``) into ``cfg.label.out``.

    Rerunning with the same config resumes; another config on the same folder is refused.
    """
    if cfg.data.source is None:
        raise ConfigError("data.source", None, "no dataset given", valid="voc:DIR, coco:DIR, folder:DIR")
    source = open_source(cfg.data.source, cfg.data.split)
    i, n = cfg.label.shard_index
    samples = shard(source.samples, i, n)
    load_kwargs = {
        "max_long_side": cfg.data.max_long_side,
        "rescale_high_bit_depth": cfg.data.rescale_high_bit_depth,
    }
    out = Path(cfg.label.out)
    built = build_labeler(cfg)
    manifest = {**built.manifest, "source": cfg.data.source, "split": cfg.data.split}
    if cfg.label.executor == "ray":
        from zsplg_fast.labeling.ray_exec import run_ray

        return run_ray(
            samples,
            out,
            functools.partial(labeler_factory, cfg),
            manifest,
            shard=(i, n),
            workers=cfg.label.workers,
            num_gpus_per_worker=cfg.label.num_gpus_per_worker,
            ray_address=cfg.label.ray_address,
            load_kwargs=load_kwargs,
            max_errors=cfg.label.max_errors,
        )
    job = LabelJob(
        samples,
        out,
        built.labeler,
        manifest,
        shard=(i, n),
        max_errors=cfg.label.max_errors,
        io_workers=cfg.label.io_workers,
        prefetch=cfg.label.prefetch,
        load_kwargs=load_kwargs,
        on_progress=on_progress,
        image_batch=cfg.label.image_batch,
    )
    return job.run()
