"""`label` as a library call: config → source → shard → labeler → local or Ray job."""

from __future__ import annotations

import contextlib
import functools
import json
from contextlib import AbstractContextManager
from dataclasses import replace
from pathlib import Path
from typing import Any

from zsplg_fast.config import Config
from zsplg_fast.data import Sample, open_source, shard
from zsplg_fast.errors import ConfigError, DatasetError, OutputExistsError
from zsplg_fast.labeling.build import build_labeler
from zsplg_fast.labeling.job import JobSummary, LabelJob, ProgressFn
from zsplg_fast.labeling.outputs import check_label_output, prepare_output
from zsplg_fast.utils.io import atomic_write_text


def label_dataset(
    cfg: Config,
    on_progress: ProgressFn | None = None,
    out_lock: AbstractContextManager[Any] | None = None,
    error_count: Any = None,
) -> JobSummary:
    """Label ``cfg.data.source`` (optionally ``cfg.data.split``) into ``cfg.label.out``.

    Rerunning with the same config resumes; another config on the same folder is refused, and so is
    a folder of other files. Nothing is written into ``label.out`` before the labeler is built and
    the folder is claimed (so a refused or failed start leaves it as it was).
    ``label.devices`` runs one worker process per device (:mod:`zsplg_fast.labeling.devices`);
    ``out_lock`` (held while the output folder is first claimed) is how those workers share a folder,
    ``error_count`` (a ``multiprocessing.Value``) how they share ``label.max_errors``.

    Raises:
        DatasetError: the dataset (this shard) has no images.
    """
    if cfg.data.source is None:
        raise ConfigError("data.source", None, "no dataset given", valid="voc:DIR, coco:DIR, folder:DIR")
    out = Path(cfg.label.out)
    check_label_output(out)  # before any model loads: a folder of the user's, not writable, a file
    source = open_source(cfg.data.source, cfg.data.split)
    auto = cfg.classify.classes == "auto"
    given = cfg  # workers resolve 'auto' themselves, once each has claimed the folder
    cfg = resolve_auto_classes(cfg, source.class_names)
    i, n = cfg.label.shard_index
    samples = shard(source.samples, i, n)
    if not samples:
        split = f" split {cfg.data.split!r}" if cfg.data.split else ""
        raise DatasetError(cfg.data.source, f"no images to label in{split} (shard {i}/{n})")
    load_kwargs = {
        "max_long_side": cfg.data.max_long_side,
        "rescale_high_bit_depth": cfg.data.rescale_high_bit_depth,
    }
    if cfg.label.devices:
        from zsplg_fast.labeling.devices import label_on_devices

        summary: JobSummary = label_on_devices(given, samples, on_progress, run_shard=label_dataset)
        if cfg.label.overlays and (out / "manifest.json").is_file():
            classes = json.loads((out / "manifest.json").read_text())["classes"]
            write_label_grid(out, samples, cfg.label.overlays, classes)
        return summary
    class_names = _auto_classes(source.class_names, out) if auto else None
    if cfg.label.executor == "ray":  # the driver builds no model; actors get absolute paths
        from zsplg_fast.labeling.ray_driver import label_on_ray
        from zsplg_fast.models import load_class_names

        names = class_names if class_names is not None else load_class_names(cfg.classify.classes)
        claimed = functools.partial(write_auto_classes, cfg, source.class_names) if auto else None
        summary, manifest = label_on_ray(
            cfg, samples, names, (i, n), load_kwargs, on_progress, out_lock, claimed
        )
    else:
        built = build_labeler(cfg, class_names=class_names, n_images=len(samples))
        manifest = {**built.manifest, "source": cfg.data.source, "split": cfg.data.split}
        with out_lock if out_lock is not None else contextlib.nullcontext():
            prepare_output(out, manifest)  # the decision to run: marker, manifest
            if auto:
                write_auto_classes(cfg, source.class_names)
        summary = _local(
            cfg, samples, out, built.labeler, manifest, (i, n), load_kwargs, on_progress, error_count
        )
    if cfg.label.overlays:
        write_label_grid(out, samples, cfg.label.overlays, manifest["classes"])
    return summary


def _local(
    cfg: Config,
    samples: list[Sample],
    out: Path,
    labeler: Any,
    manifest: dict[str, Any],
    shard_in: tuple[int, int],
    load_kwargs: dict[str, Any],
    on_progress: ProgressFn | None,
    error_count: Any = None,
) -> JobSummary:
    job = LabelJob(
        samples,
        out,
        labeler,
        manifest,
        shard=shard_in,
        max_errors=cfg.label.max_errors,
        io_workers=cfg.label.io_workers,
        prefetch=cfg.label.prefetch,
        load_kwargs=load_kwargs,
        on_progress=on_progress,
        image_batch=cfg.label.image_batch,
        error_count=error_count,
    )
    return job.run()


def _auto_classes(dataset_classes: list[str] | None, out: Path) -> list[list[str]]:
    from zsplg_fast.models.text import parse_class_lines

    return parse_class_lines("\n".join(dataset_classes or []), str(out / "classes.txt"))


def resolve_auto_classes(cfg: Config, dataset_classes: list[str] | None) -> Config:
    """``classify.classes: auto`` → the dataset's own class list (its classes.txt), recorded as
    ``<label.out>/classes.txt`` (one class per line, '|' synonyms kept) so workers and reruns read a file.

    Writes nothing (:func:`write_auto_classes` does, once the job has claimed the folder).

    Raises:
        ConfigError: 'auto' for a dataset that declares no classes.
        OutputExistsError: ``<label.out>/classes.txt`` holds another class list.
    """
    if cfg.classify.classes != "auto":
        return cfg
    if not dataset_classes:
        why = f"{cfg.data.source} declares no classes.txt"
        raise ConfigError("classify.classes", "auto", why, valid="voc, coco, a file")
    path = Path(cfg.label.out) / "classes.txt"
    if path.exists() and path.read_text(encoding="utf-8", errors="replace") != _class_text(dataset_classes):
        raise OutputExistsError(path, "holds another class list; choose another --out")
    return replace(cfg, classify=replace(cfg.classify, classes=str(path)))


def _class_text(dataset_classes: list[str]) -> str:
    return "\n".join(dataset_classes) + "\n"


def write_auto_classes(cfg: Config, dataset_classes: list[str] | None) -> None:
    """Write the file :func:`resolve_auto_classes` named, unless it is there (call after claiming)."""
    path = Path(cfg.classify.classes)
    if dataset_classes and not path.exists():
        atomic_write_text(path, _class_text(dataset_classes))


def write_label_grid(out: Path, samples: list[Sample], n: int, class_names: list[str]) -> Path | None:
    """``out/overlays.png``: ``n`` labeled samples, each as image | zero-shot label | ground truth."""
    from zsplg_fast.data import read_label
    from zsplg_fast.labeling.outputs import is_done, output_paths
    from zsplg_fast.viz import GridItem, pick, write_grid

    done = [s for s in samples if is_done(out, s.id)]
    if not done:
        return None
    items = [
        GridItem(s.load_image(), read_label(output_paths(out, s.id)[0]), s.load_label(), s.id)
        for s in pick(done, n)
    ]
    return write_grid(out / "overlays.png", items, class_names)
