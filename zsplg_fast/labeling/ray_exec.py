"""Many machines: the label job as a Ray Data pipeline laid out for GPU batch inference.

Three stages, as Ray Data's batch-inference guide lays them out (``map_batches`` with a function for
CPU tasks, and with a callable class for a fixed pool of stateful actors sized by ``num_gpus`` and
``batch_size``, the pool given as ``concurrency=n`` (Ray 2.9-2.50) or ``compute=ActorPoolStrategy(size=n)``
(Ray >= 2.51 deprecates ``concurrency`` for it); every stage streams, so decoding overlaps labeling):

1. **prepare** (CPU tasks, ``num_cpus=1`` each, as many as the cluster's CPUs allow): decode each
   image with ``load_image`` (the local job's checks: EXIF, size guard, bit depth), cut SAM's crops and
   resize them (``amg_prepare``), and resize the CLIP input (``clip_resize``);
2. **label** (``label.workers`` actors, ``label.num_gpus_per_worker`` GPUs and 1 CPU each, batches of
   ``label.ray_batch`` images): each actor builds its engines once; per batch one encoder pass over all
   crops (in ``encoder_batch`` chunks), CLIP's normalisation and one dense-CLIP pass, then the decoder
   and post-processing per image (``ZeroShotLabeler.label_prepared``). ``num_gpus_per_worker: auto``
   gives each actor 1 GPU when the cluster has GPUs, else none (one warning);
3. **write** (CPU tasks): the PNG and then the meta JSON of each image, atomically, through
   :mod:`zsplg_fast.labeling.outputs` — the local job's files, so a rerun (either executor) skips them.

Stages with equal resources may be fused by Ray Data (with CPU actors the prepare tasks run inside
the actors); GPU actors keep the prepare stage on the CPU workers. The driver builds no model: the
sizes come from the config (:meth:`PrepareSpec.from_config`), and every actor checks them against the
labeler it builds. The driver lists the images not yet done, streams the write stage's status rows back
and records failures in the same ``errors*.jsonl`` as the local job. A failure in any stage is per
image, never fatal; a failing label batch is retried image by image. A sticky CUDA error in an actor
(:mod:`zsplg_fast.labeling.device_errors`) stops the job: the actor labels nothing more, the driver
records the images left in the shard status file and raises ``DeviceLostError``.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from zsplg_fast.config.labeling import AmgConfig
from zsplg_fast.data import LoadStats, Sample, load_image
from zsplg_fast.errors import ConfigError, MissingDependencyError
from zsplg_fast.labeling.device_errors import first_line, is_sticky_device_error
from zsplg_fast.labeling.job import DeviceLostError, JobAbortedError, JobSummary, ProgressFn
from zsplg_fast.labeling.labeler import LabelResult, ZeroShotLabeler
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

log = logging.getLogger(__name__)

_STATUS = ("id", "path", "status", "error", "message", "stage")


def _import_ray() -> Any:
    try:
        import ray
    except ModuleNotFoundError as e:
        raise MissingDependencyError(
            "ray", "the ray executor (--executor ray)", "install it with: pip install 'zsplg-fast[dist]'"
        ) from e
    return ray


def _actor_pool(ray: Any, size: int) -> dict[str, Any]:
    """A fixed pool of ``size`` actors, in the form this Ray documents: ``concurrency=size`` from 2.9,
    ``compute=ActorPoolStrategy(size=size)`` again from 2.51 (which deprecates ``concurrency``)."""
    version = tuple(int(p) for p in ray.__version__.split(".")[:2] if p.isdigit())
    if version >= (2, 51):
        return {"compute": ray.data.ActorPoolStrategy(size=size)}
    return {"concurrency": size}


@dataclass(frozen=True)
class PrepareSpec:
    """What the CPU stage needs: SAM's encoder size S and AMG crop settings, CLIP's input size, the
    working resolution and ``load_image``'s keyword arguments (CLIP's normalisation is the actor's)."""

    sam_size: int
    amg: AmgConfig
    clip_size: int
    load_kwargs: dict[str, Any]
    work_long_side: int = 0
    family: str = "sam"  # mask-proposer family: how the CPU stage resizes (proposers.RESIZERS)

    @classmethod
    def of(cls, labeler: ZeroShotLabeler, load_kwargs: dict[str, Any] | None = None) -> PrepareSpec:
        """Read the sizes from a built labeler (its mask source must be the fast generator)."""
        masks, clf = labeler.masks, labeler.classifier
        if not hasattr(masks, "generate_prepared"):
            raise ConfigError(
                "label.masks", "upstream", "the ray executor runs the fast generator", valid="fast"
            )
        return cls(
            int(masks.image_size),  # type: ignore[attr-defined]
            masks.cfg,  # type: ignore[attr-defined]
            clf.image_size,
            dict(load_kwargs or {}),
            int(labeler.work_long_side),
            str(getattr(getattr(masks, "proposer", None), "family", "sam")),
        )

    @classmethod
    def from_config(cls, cfg: Any, load_kwargs: dict[str, Any] | None = None) -> PrepareSpec:
        """The same sizes from the config alone (the driver builds no model): S from the SAM variant's
        architecture on the meta device (SAM 2: its config), CLIP's input from ``clip.image_size``, the
        resize from the proposer family."""
        from zsplg_fast.models.sam import sam_family, sam_input_size

        if cfg.label.masks != "fast":
            raise ConfigError(
                "label.masks", cfg.label.masks, "the ray executor runs the fast generator", valid="fast"
            )
        return cls(
            sam_input_size(cfg.sam.variant),
            cfg.amg,
            int(cfg.clip.image_size),
            dict(load_kwargs or {}),
            int(cfg.label.work_long_side),
            sam_family(cfg.sam.variant),
        )

    def check(self, labeler: ZeroShotLabeler) -> None:
        """Raise ConfigError unless ``labeler`` (built on an actor) expects these sizes."""
        built = PrepareSpec.of(labeler, self.load_kwargs)
        if built != self:
            raise ConfigError("label", "ray", f"the actor's labeler expects {built}, the driver sent {self}")


def _status(sid: str, path: str, status: str, err: BaseException | None = None, stage: str = "") -> dict:
    return {
        "id": sid,
        "path": path,
        "status": status,
        "error": type(err).__name__ if err else "",
        "message": str(err) if err else "",
        "stage": stage if err else "",
    }


def _columns(rows: list[dict[str, Any]], keys: Sequence[str]) -> dict[str, np.ndarray]:
    out = {}
    for k in keys:
        col = np.empty(len(rows), dtype=object)
        col[:] = [r[k] for r in rows]
        out[k] = col
    return out


def prepare_batch(batch: dict[str, np.ndarray], spec: PrepareSpec) -> dict[str, np.ndarray]:
    """CPU stage: rows ``id``, ``path`` → status columns plus ``prepared`` (an ``amg_prepare.PreparedImage``)
    and ``clip`` ((3, S, S) float32 in [0, 1], not normalised); placeholders (no crops, zeros) for an
    image that failed to load (never None: Ray Data cannot join a null block to a tensor block)."""
    import torch

    from zsplg_fast.labeling.amg_prepare import PreparedImage, prepare_image
    from zsplg_fast.labeling.classify import clip_resize
    from zsplg_fast.labeling.labeler import to_working
    from zsplg_fast.labeling.proposers import RESIZERS

    torch.set_num_threads(1)
    rows = []
    for sid, path in zip(batch["id"], batch["path"], strict=True):
        row: dict[str, Any] = {
            **_status(str(sid), str(path), "ok"),
            "prepared": PreparedImage((0, 0), []),
            "clip": np.zeros((3, spec.clip_size, spec.clip_size), np.float32),
        }
        try:
            image = load_image(Path(str(path)), stats=LoadStats(), **spec.load_kwargs)
            work = to_working(image, spec.work_long_side)  # as the local labeler: masks at working size
            row["prepared"] = prepare_image(work, spec.sam_size, spec.amg, RESIZERS[spec.family])
            row["prepared"].display_hw = (int(image.shape[0]), int(image.shape[1]))
            x = clip_resize(work, spec.clip_size)
            row["clip"] = x[0].numpy()
        except Exception as e:  # recorded by the driver, never fatal
            row.update(_status(str(sid), str(path), "failed", e, "load"))
        rows.append(row)
    return _columns(rows, (*_STATUS, "prepared", "clip"))


class LabelStage:
    """GPU (or CPU) actor stage: builds the labeler once; labels a batch of prepared images.

    Output columns: the status columns, ``label`` ((H, W) uint8; (0, 0) unless labeled) and ``meta``
    (the meta record as JSON text). After a sticky CUDA error the actor labels nothing more: that row and
    every later one fails with stage ``device`` (the driver stops the job on the first).
    """

    def __init__(
        self, labeler_factory: Callable[[], ZeroShotLabeler], spec: PrepareSpec | None = None
    ) -> None:
        self.labeler = labeler_factory()
        if spec is not None:
            spec.check(self.labeler)
        self.lost: BaseException | None = None  # the sticky device error, once there is one

    def _label(self, rows: list[dict[str, Any]]) -> list[LabelResult]:
        import torch

        from zsplg_fast.labeling.classify import clip_normalise

        clf = self.labeler.classifier
        clip = clip_normalise(torch.from_numpy(np.stack([r["clip"] for r in rows])), clf.mean, clf.std)
        return self.labeler.label_prepared([r["prepared"] for r in rows], clip)

    def _guarded(self, rows: list[dict[str, Any]]) -> list[LabelResult] | BaseException:
        if self.lost is not None:
            return self.lost
        try:
            return self._label(rows)
        except Exception as e:  # recorded by the driver, never fatal (unless the device is lost)
            if is_sticky_device_error(e):
                self.lost = e
            return e

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        rows = [{k: batch[k][i] for k in batch} for i in range(len(batch["id"]))]
        todo = [r for r in rows if r["status"] == "ok"]
        results: dict[str, LabelResult | BaseException] = {}
        got = self._guarded(todo) if todo else []
        if not isinstance(got, BaseException):
            results = dict(zip([r["id"] for r in todo], got, strict=True))
        else:  # isolate the bad image: one at a time
            for r in todo:
                one = self._guarded([r])
                results[r["id"]] = one if isinstance(one, BaseException) else one[0]
        out = []
        for r in rows:
            res = results.get(r["id"])
            row = {k: r[k] for k in _STATUS}
            row["label"], row["meta"] = np.zeros((0, 0), np.uint8), ""  # never None (see prepare_batch)
            if isinstance(res, LabelResult):
                row["label"], row["meta"] = res.label, json.dumps(res.meta)
            elif isinstance(res, BaseException):
                stage = "device" if res is self.lost else "label"
                row.update(_status(r["id"], r["path"], "failed", res, stage))
            out.append(row)
        return _columns(out, (*_STATUS, "label", "meta"))


def write_batch(batch: dict[str, np.ndarray], out: str) -> dict[str, np.ndarray]:
    """CPU stage: write each labeled row's PNG and meta JSON (atomic, as the local job's writer).

    A write that fails with an ``OSError`` (disk full, permission, read-only, a folder in the way) is
    status ``stop``: the driver stops the job there, as the local job does; the batch's later rows are
    not written (status ``unwritten``), and a rerun labels them."""
    rows = []
    stopped = False
    for i in range(len(batch["id"])):
        row = {k: batch[k][i] for k in _STATUS}
        if row["status"] == "ok" and stopped:
            row["status"] = "unwritten"
        elif row["status"] == "ok":
            sample = Sample(id=str(row["id"]), image_path=Path(str(row["path"])), label_path=None)
            try:
                write_result(Path(out), sample, LabelResult(batch["label"][i], json.loads(batch["meta"][i])))
                row["status"] = "labeled"
            except OSError as e:  # the folder cannot take files: the job stops (the driver raises)
                row.update(_status(sample.id, str(row["path"]), "stop", e, "write"))
                stopped = True
            except Exception as e:  # recorded by the driver, never fatal
                row.update(_status(sample.id, str(row["path"]), "failed", e, "write"))
        rows.append(row)
    return _columns(rows, _STATUS)


def gpus_per_actor(setting: float | str, ray: Any, device: str = "auto") -> float:
    """``label.num_gpus_per_worker`` for this cluster: a number as given; ``auto`` → 1 GPU per actor when
    the cluster reports GPUs (and ``label.device`` is not ``cpu``), else 0 (CPU actors, one warning)."""
    if setting != "auto":
        return float(setting)
    if device == "cpu":
        return 0.0
    if float(ray.cluster_resources().get("GPU", 0)) > 0:
        return 1.0
    log.warning(
        "ray: the cluster reports no GPUs; labeling actors run on the CPU (num_gpus_per_worker: auto)"
    )
    return 0.0


def run_ray(
    samples: Sequence[Sample],
    out: str | Path,
    labeler_factory: Callable[[], ZeroShotLabeler],
    manifest: dict[str, Any],
    spec: PrepareSpec,
    *,
    shard: tuple[int, int] = (0, 1),
    workers: int = 1,
    num_gpus_per_worker: float | str = "auto",
    batch_size: int = 4,
    ray_address: str | None = None,
    max_errors: int | None = None,
    on_progress: ProgressFn | None = None,
    device: str = "auto",
    record: dict[str, Any] | None = None,
) -> JobSummary:
    """Label ``samples`` into ``out`` on a Ray cluster (or a local Ray when none is running or given).

    ``labeler_factory`` must be picklable (e.g. ``functools.partial(build.labeler_factory, cfg)``) and
    name absolute paths only (actors run in other folders, on other nodes); ``out`` and the images must
    be reachable from every node under the same path (a shared filesystem). ``num_gpus_per_worker``:
    see :func:`gpus_per_actor`; ``record`` is added to the shard status file (with the GPUs per actor).
    Raises MissingDependencyError without ray, JobAbortedError past ``max_errors``, DeviceLostError after
    a sticky CUDA error in an actor.
    """
    ray = _import_ray()
    t0 = time.perf_counter()
    outp = Path(out).resolve()
    prepare_output(outp, manifest)
    remove_stale_temps(outp)
    epath = errors_file(outp, shard)
    compact_errors(outp, epath)
    summary = JobSummary(total=len(samples), errors_path=str(epath))
    todo = [s for s in samples if not is_done(outp, s.id)]
    summary.skipped = summary.total - len(todo)
    by_id = {s.id: s for s in todo}
    write_stop: dict[str, Any] | None = None  # the first row whose write failed with an OSError
    lost: dict[str, Any] | None = None  # the first row an actor failed with a sticky device error
    gpus = 0.0
    if todo:
        if not ray.is_initialized():
            ray.init(address=ray_address, include_dashboard=False, log_to_driver=False)
        gpus = gpus_per_actor(num_gpus_per_worker, ray, device)
        ds = ray.data.from_items([{"id": s.id, "path": str(s.image_path.absolute())} for s in todo])
        ds = ds.map_batches(prepare_batch, fn_kwargs={"spec": spec}, batch_size=batch_size, num_cpus=1)
        ds = ds.map_batches(
            LabelStage,
            fn_constructor_kwargs={"labeler_factory": labeler_factory, "spec": spec},
            batch_size=batch_size,
            **_actor_pool(ray, workers),
            num_gpus=gpus,
            num_cpus=1,
        )
        ds = ds.map_batches(write_batch, fn_kwargs={"out": str(outp)}, batch_size=batch_size, num_cpus=1)
        for row in ds.iter_rows():
            if row["status"] == "stop":  # a failed write stops the job, as in the local job
                write_stop = row
                break  # dropping the iterator cancels the rest of the pipeline
            if row["status"] == "unwritten":
                continue
            if row["stage"] == "device":
                lost = row
                break  # the actor's GPU is gone: stop the job (dropping the iterator cancels the rest)
            if row["status"] == "failed":
                summary.failed += 1
                err = type(str(row["error"]), (Exception,), {})(row["message"])
                record_error(epath, error_record(by_id[row["id"]], err, row["stage"]))
            else:
                summary.labeled += 1
            if on_progress:
                on_progress(summary.skipped + summary.labeled + summary.failed, summary.total, row["id"])
            if max_errors is not None and summary.failed > max_errors:
                break  # dropping the iterator cancels the rest of the pipeline
    summary.seconds = round(time.perf_counter() - t0, 3)
    if write_stop is not None:  # the local job's words (job.py): the counts so far, exit 1, rerun resumes
        raise JobAbortedError(
            f"{write_stop['message']}; stopped after {summary.labeled} of {len(todo)} images to label "
            "(nothing half-written is left); free the space or fix the folder, then rerun to resume",
            summary,
        )
    compact_errors(outp, epath)  # drop lines of images retried successfully
    i, n = shard
    status = outp / "shards" / f"{i}-of-{n}.json"
    extra = {"executor": "ray", "num_gpus_per_worker": gpus, **(record or {})}
    if lost:
        err = type(str(lost["error"]), (Exception,), {})(lost["message"])
        record_error(epath, error_record(by_id[lost["id"]], err, "label"))
        left = [s.id for s in todo if not is_done(outp, s.id)]
        extra.update({"stopped": first_line(err), "left": left})
        atomic_write_json(status, {**summary.to_dict(), **extra})
        raise DeviceLostError(
            f"{outp}: device error on {lost['id']} ({first_line(err)}) in a ray actor: stopped with "
            f"{len(left)} of {len(todo)} images left (listed in {status}); check that node's GPU "
            "(nvidia-smi), then rerun to resume",
            summary,
            left,
        )
    atomic_write_json(status, {**summary.to_dict(), **extra})
    if max_errors is not None and summary.failed > max_errors:
        raise JobAbortedError(
            f"{outp}: {summary.failed} images failed (max_errors={max_errors}); see {epath}"
        )
    return summary
