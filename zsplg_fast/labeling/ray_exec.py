"""Many machines: the label job as a Ray Data pipeline.

A Ray Dataset of image paths goes through ``map_batches`` with a callable class: an actor pool in
which every actor builds the labeler (loads its engines) once. Each actor writes its images' outputs
itself, idempotently, through :mod:`zsplg_fast.labeling.outputs`, so a rerun skips finished images
and the folder is identical to the local executor's. Follows Ray Data's documented batch-inference
pattern (``ActorPoolStrategy`` with a stateful callable class).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from zsplg_fast.data import LoadStats, Sample, load_image
from zsplg_fast.errors import MissingDependencyError
from zsplg_fast.labeling.job import JobAbortedError, JobSummary, Labeler
from zsplg_fast.labeling.outputs import (
    compact_errors,
    error_record,
    errors_file,
    is_done,
    prepare_output,
    record_error,
    write_result,
)
from zsplg_fast.utils.io import atomic_write_json, remove_stale_temps


def _import_ray() -> Any:
    try:
        import ray
    except ModuleNotFoundError as e:
        raise MissingDependencyError(
            "ray", "the ray executor (--executor ray)", "install it with: pip install 'zsplg-fast[dist]'"
        ) from e
    return ray


class RayLabelActor:
    """Stateful Ray Data UDF: builds the labeler once, labels and writes each row's image.

    Input batch columns: ``id`` and ``path`` (numpy object arrays). Output columns: ``id``,
    ``status`` ("labeled" | "skipped" | "failed"), ``error`` and ``message`` (empty unless failed),
    ``seconds``.
    """

    def __init__(self, labeler_factory: Callable[[], Labeler], out: str, load_kwargs: dict[str, Any]) -> None:
        self.labeler = labeler_factory()
        self.out = Path(out)
        self.load_kwargs = load_kwargs

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        rows: dict[str, list[Any]] = {
            "id": [],
            "status": [],
            "error": [],
            "message": [],
            "stage": [],
            "seconds": [],
        }
        for sid, path in zip(batch["id"], batch["path"], strict=True):
            t0 = time.perf_counter()
            sample = Sample(id=str(sid), image_path=Path(str(path)), label_path=None)
            status, err, stage = "labeled", None, ""
            if is_done(self.out, sample.id):
                status = "skipped"
            else:
                try:
                    stage = "load"
                    image = load_image(sample.image_path, stats=LoadStats(), **self.load_kwargs)
                    stage = "label"
                    result = self.labeler(image)
                    stage = "write"
                    write_result(self.out, sample, result)
                except Exception as e:  # recorded by the driver, never fatal
                    status, err = "failed", e
            rows["id"].append(sample.id)
            rows["status"].append(status)
            rows["error"].append(type(err).__name__ if err else "")
            rows["message"].append(str(err) if err else "")
            rows["stage"].append(stage if err else "")
            rows["seconds"].append(time.perf_counter() - t0)
        return {k: np.asarray(v) for k, v in rows.items()}


def run_ray(
    samples: Sequence[Sample],
    out: str | Path,
    labeler_factory: Callable[[], Labeler],
    manifest: dict[str, Any],
    *,
    shard: tuple[int, int] = (0, 1),
    workers: int = 1,
    num_gpus_per_worker: float = 0.0,
    ray_address: str | None = None,
    load_kwargs: dict[str, Any] | None = None,
    max_errors: int | None = None,
) -> JobSummary:
    """Label ``samples`` into ``out`` on a Ray cluster (or a local Ray when no address is given).

    ``labeler_factory`` must be picklable (e.g. ``functools.partial(build_labeler, cfg)``).
    Raises MissingDependencyError without ray, JobAbortedError past ``max_errors``.
    """
    ray = _import_ray()
    t0 = time.perf_counter()
    outp = Path(out)
    prepare_output(outp, manifest)
    remove_stale_temps(outp)
    epath = errors_file(outp, shard)
    compact_errors(outp, epath)
    summary = JobSummary(total=len(samples), errors_path=str(epath))
    todo = [s for s in samples if not is_done(outp, s.id)]
    summary.skipped = summary.total - len(todo)
    if todo:
        if not ray.is_initialized():
            ray.init(
                address=ray_address, ignore_reinit_error=True, include_dashboard=False, log_to_driver=False
            )
        by_id = {s.id: s for s in todo}
        ds = ray.data.from_items([{"id": s.id, "path": str(s.image_path)} for s in todo])
        results = ds.map_batches(
            RayLabelActor,
            fn_constructor_kwargs={
                "labeler_factory": labeler_factory,
                "out": str(outp.resolve()),
                "load_kwargs": dict(load_kwargs or {}),
            },
            batch_size=1,
            compute=ray.data.ActorPoolStrategy(size=workers),
            num_gpus=num_gpus_per_worker or None,
            batch_format="numpy",
        )
        for row in results.iter_rows():
            if row["status"] == "failed":
                summary.failed += 1
                err = type(row["error"], (Exception,), {})(row["message"])
                record_error(epath, error_record(by_id[row["id"]], err, row["stage"]))
            elif row["status"] == "labeled":
                summary.labeled += 1
            else:
                summary.skipped += 1
            if max_errors is not None and summary.failed > max_errors:
                break  # dropping the iterator cancels the rest of the pipeline
    summary.seconds = round(time.perf_counter() - t0, 3)
    compact_errors(outp, epath)  # drop lines of images retried successfully
    i, n = shard
    atomic_write_json(outp / "shards" / f"{i}-of-{n}.json", {**summary.to_dict(), "executor": "ray"})
    if max_errors is not None and summary.failed > max_errors:
        raise JobAbortedError(
            f"{outp}: {summary.failed} images failed (max_errors={max_errors}); see {epath}"
        )
    return summary
