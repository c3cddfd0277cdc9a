"""The driver side of ``label --executor ray``: no model is built here, and every path is absolute.

Ray actors run in their own working folder, often on other nodes, so every path the driver hands them
(images, the class file, engines, checkpoints, the output folder) is made absolute against the
driver's working folder first (:func:`absolute_paths`), and recorded in the manifest (``paths``, at the
first claim) and in the shard status file of each run. The driver reads what it needs from the config
alone: the manifest from the weights files' fingerprints (:func:`build.describe_labeling`), with
``label.precision`` / ``label.compile`` resolved here and handed to the actors as resolved
(:func:`build.resolve_run_config`: the manifest says what they run), and the
prepare stage's sizes from the architecture on the meta device (:meth:`PrepareSpec.from_config`); only
the actors build models and load engines (a CPU-only head node never touches CUDA or TensorRT).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import replace
from pathlib import Path
from typing import Any

from zsplg_fast.config import Config
from zsplg_fast.data import Sample
from zsplg_fast.labeling.build import describe_labeling, labeler_factory, resolve_run_config
from zsplg_fast.labeling.engines import ARTIFACT_FOLDERS
from zsplg_fast.labeling.job import JobSummary, ProgressFn
from zsplg_fast.labeling.outputs import prepare_output


def _abs(p: str) -> str:
    return os.path.abspath(os.path.expanduser(p))


def _looks_like_path(value: str) -> bool:
    return os.sep in value or value.startswith(".") or Path(value).expanduser().exists()


def absolute_paths(cfg: Config) -> tuple[Config, dict[str, str]]:
    """``cfg`` with every path it names made absolute (against this process's working folder), and
    ``{config key: absolute value}`` of those paths. Names stay names: ``voc`` classes, an open_clip
    tag, a split name, the parts of ``data.source`` that are not files here (a COCO annotation file
    named relative to the dataset folder)."""
    from zsplg_fast.models.text import BUILTIN_CLASS_LISTS

    paths: dict[str, str] = {}

    def path(key: str, value: str | None, when: bool = True) -> str | None:
        if value is None or not when:
            return value
        paths[key] = _abs(value)
        return paths[key]

    data, label, classify, sam, clip = cfg.data, cfg.label, cfg.classify, cfg.sam, cfg.clip
    source = data.source
    if source:
        kind, _, arg = source.partition(":")
        parts = [_abs(p) if p and Path(p).expanduser().exists() else p for p in arg.split(":")]
        source = paths["data.source"] = f"{kind}:{':'.join(parts)}"
    split = path("data.split", data.split, bool(data.split) and Path(str(data.split)).expanduser().exists())
    classes = path(
        "classify.classes", classify.classes, classify.classes.lower() not in (*BUILTIN_CLASS_LISTS, "auto")
    )
    engines = label.engines or ARTIFACT_FOLDERS.get(label.backend)
    pretrained = clip.pretrained
    run = replace(
        cfg,
        data=replace(data, source=source, split=split),
        classify=replace(classify, classes=classes),
        sam=replace(sam, checkpoint=path("sam.checkpoint", sam.checkpoint)),
        clip=replace(
            clip,
            model=path("clip.model", clip.model, Path(clip.model).expanduser().is_file()),
            pretrained=path(
                "clip.pretrained", pretrained, bool(pretrained) and _looks_like_path(str(pretrained))
            ),
        ),
        label=replace(
            label,
            out=path("label.out", label.out),
            engines=path("label.engines", engines, engines is not None),
        ),
    )
    return run, paths


def label_on_ray(
    cfg: Config,
    samples: Sequence[Sample],
    class_names: list[list[str]],
    shard: tuple[int, int],
    load_kwargs: dict[str, Any],
    on_progress: ProgressFn | None = None,
    out_lock: AbstractContextManager[Any] | None = None,
    claimed: Any = None,
) -> tuple[JobSummary, dict[str, Any]]:
    """Claim ``cfg.label.out`` with a manifest made without models, then run the Ray pipeline with
    the absolute-path config. ``claimed()`` runs right after the claim (writes the auto class file).

    Returns the summary and the manifest. Raises as :func:`ray_exec.run_ray`.
    """
    from zsplg_fast.labeling.ray_exec import PrepareSpec, run_ray

    per_worker = len(samples) // max(1, cfg.label.workers)
    cfg, mode = resolve_run_config(cfg, per_worker)  # the actors run what the manifest says
    run_cfg, paths = absolute_paths(cfg)
    spec = PrepareSpec.from_config(run_cfg, load_kwargs)
    manifest = {
        **describe_labeling(cfg, class_names, "on each ray actor", mode),
        "source": cfg.data.source,
        "split": cfg.data.split,
        "paths": paths,
    }
    out = Path(run_cfg.label.out)
    with out_lock if out_lock is not None else nullcontext():
        prepare_output(out, manifest)  # the decision to run: marker, manifest
        if claimed is not None:
            claimed()
    absolute = [replace(s, image_path=Path(_abs(str(s.image_path)))) for s in samples]
    summary = run_ray(
        absolute,
        out,
        functools.partial(labeler_factory, run_cfg, n_images=per_worker),
        manifest,
        spec,
        shard=shard,
        workers=run_cfg.label.workers,
        num_gpus_per_worker=run_cfg.label.num_gpus_per_worker,
        batch_size=run_cfg.label.ray_batch,
        ray_address=run_cfg.label.ray_address,
        max_errors=run_cfg.label.max_errors,
        on_progress=on_progress,
        device=run_cfg.label.device,
        record={"paths": paths},
    )
    return summary, manifest
