"""The dataset job: label every image once, atomically, resumably, in a bounded pipeline.

The output folder's layout is described in :mod:`zsplg_fast.labeling.outputs`. Stages overlap:
decoding and the labeler's CPU half (``prepare``: working-size and encoder resizes) run in
``io_workers`` threads with a bounded prefetch queue, the labeler runs on the caller's thread, and a
writer thread encodes PNGs, so the model is not idle while files are written. One image at a time, the
labeler's ``start`` (the encoder, launched on a second CUDA stream when the labeler overlaps) runs for
image i+1 before ``finish`` (decoder, filter, classes) of image i. Memory stays bounded by ``prefetch``
decoded images, one started image and ``prefetch`` pending writes.
"""

from __future__ import annotations

import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from zsplg_fast.data import LoadStats, Sample, load_image
from zsplg_fast.errors import ZsplgError
from zsplg_fast.labeling.device_errors import first_line, is_sticky_device_error
from zsplg_fast.labeling.labeler import LabelResult
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

Labeler = Callable[[np.ndarray], LabelResult]
ProgressFn = Callable[[int, int, str], None]


class JobAbortedError(ZsplgError):
    """The job stopped early: too many images failed, or an output could not be written (disk full,
    permission, read-only). ``summary`` holds the counts so far; a rerun resumes."""

    exit_code = 1

    def __init__(self, message: str, summary: JobSummary | None = None) -> None:
        super().__init__(message)
        self.summary = summary


class DeviceLostError(JobAbortedError):
    """A sticky CUDA error (illegal address, ECC, launch failure): the device is unusable in this process,
    so the job stopped; ``left`` lists the ids not labeled (also in the shard status file)."""

    def __init__(
        self, message: str, summary: JobSummary | None = None, left: list[str] | None = None
    ) -> None:
        super().__init__(message, summary)
        self.left = list(left or [])


class ErrorCount:
    """Failed images counted across the jobs that share one ``max_errors`` (in-process form; the
    ``--devices`` workers share a ``multiprocessing.Value("i")``, which has the same interface)."""

    def __init__(self) -> None:
        self.value = 0
        self._lock = threading.Lock()

    def get_lock(self) -> threading.Lock:
        return self._lock


def add_errors(count: Any, n: int) -> int:
    """Add ``n`` failures to ``count`` (an ``ErrorCount`` or a ``multiprocessing.Value``); the new total."""
    with count.get_lock():
        count.value += n
        return int(count.value)


@dataclass
class JobSummary:
    """Counts of one run. ``skipped`` = already done before this run."""

    total: int = 0
    skipped: int = 0
    labeled: int = 0
    failed: int = 0
    seconds: float = 0.0
    errors_path: str = ""
    load_stats: dict[str, int] = field(default_factory=dict)
    timings_s: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class _Decoded:
    sample: Sample
    image: np.ndarray | None
    error: BaseException | None
    prepared: Any = None  # the labeler's ``prepare(image)``, made in the decode worker
    stage: str = "load"  # where ``error`` happened: load | label (prepare)


Outcome = tuple[_Decoded, LabelResult | None, BaseException | None, str]


class LabelJob:
    """Label ``samples`` into ``out`` with ``labeler``; rerunning skips done images, retries failed ones.

    Args:
        samples: this shard's samples (see ``zsplg_fast.data.shard``).
        out: output folder; prepared by :func:`prepare_output` with ``manifest``.
        labeler: (H, W, 3) uint8 → LabelResult.
        manifest: must contain ``fingerprint``; written once into ``out/manifest.json``.
        shard: (i, n) for the errors / shard-status file names.
        max_errors: tolerate this many failed images in this run; one more stops it (None = never).
        io_workers: decoding threads (0 = decode on the caller's thread).
        prefetch: bounded number of decoded images waiting, and of results waiting to be written.
        load_kwargs: passed to ``load_image`` (``max_long_side``, ``rescale_high_bit_depth``).
        on_progress: called as ``(done, total, sample_id)`` after each image.
        image_batch: images labeled together (the encoder sees them as one batch when the labeler has
            ``label_batch``); 1 = one at a time.
        error_count: failures counted against ``max_errors`` together with other jobs (the ``--devices``
            workers share one); None = this run's own.

    A sticky CUDA error (:mod:`zsplg_fast.labeling.device_errors`) stops the job at once with
    ``DeviceLostError``: the images left are listed in the shard status file, a rerun resumes.
    """

    def __init__(
        self,
        samples: Sequence[Sample],
        out: str | Path,
        labeler: Labeler,
        manifest: dict[str, Any],
        *,
        shard: tuple[int, int] = (0, 1),
        max_errors: int | None = None,
        io_workers: int = 2,
        prefetch: int = 4,
        load_kwargs: dict[str, Any] | None = None,
        on_progress: ProgressFn | None = None,
        image_batch: int = 1,
        error_count: Any = None,
    ) -> None:
        self.samples = list(samples)
        self.out = Path(out)
        self.labeler = labeler
        self.manifest = manifest
        self.shard = shard
        self.max_errors = max_errors
        self.io_workers = io_workers
        self.prefetch = max(1, prefetch)
        self.load_kwargs = dict(load_kwargs or {})
        self.on_progress = on_progress
        self.image_batch = max(1, image_batch)
        self.errors_path = errors_file(self.out, shard)
        self.error_count = error_count if error_count is not None else ErrorCount()

    # ----------------------------------------------------------------- stages
    def _decode(self, sample: Sample, stats: LoadStats) -> _Decoded:
        try:
            image = load_image(sample.image_path, stats=stats, **self.load_kwargs)
        except Exception as e:  # recorded and counted, never fatal for the job
            return _Decoded(sample, None, e)
        prepare = getattr(self.labeler, "prepare", None)
        if prepare is None:
            return _Decoded(sample, image, None)
        try:  # the labeler's CPU half (resizes) in this worker thread, off the GPU-driving thread
            return _Decoded(sample, image, None, prepare(image))
        except Exception as e:
            return _Decoded(sample, image, e, stage="label")

    def _decoded_stream(self, todo: Sequence[Sample], stats: LoadStats) -> Iterator[_Decoded]:
        if self.io_workers == 0:
            for s in todo:
                yield self._decode(s, stats)
            return
        with ThreadPoolExecutor(self.io_workers, thread_name_prefix="decode") as pool:
            pending: deque[Future[_Decoded]] = deque()
            it = iter(todo)
            for s in it:
                pending.append(pool.submit(self._decode, s, stats))
                if len(pending) >= self.prefetch:
                    break
            while pending:
                item = pending.popleft().result()
                nxt = next(it, None)
                if nxt is not None:
                    pending.append(pool.submit(self._decode, nxt, stats))
                yield item

    def _groups(self, stream: Iterator[_Decoded]) -> Iterator[list[_Decoded]]:
        """Consecutive decoded items in groups of ``image_batch`` (the last one may be shorter)."""
        group: list[_Decoded] = []
        for item in stream:
            group.append(item)
            if len(group) >= self.image_batch:
                yield group
                group = []
        if group:
            yield group

    def _label_group(self, group: list[_Decoded]) -> list[Outcome]:
        """Label the decodable images of ``group`` together; a failing batch is retried image by image.

        After a sticky device error nothing more is labeled: the image it struck has stage ``"device"``,
        the group's images not labeled yet have stage ``"left"`` (no error)."""
        ok = [it for it in group if it.error is None and it.image is not None]
        results: dict[int, tuple[LabelResult | None, BaseException | None, str]] = {
            id(it): (None, it.error, it.stage) for it in group if it not in ok
        }
        batch_fn = getattr(self.labeler, "label_batch", None)
        if len(ok) > 1 and batch_fn is not None:
            preps = [it.prepared for it in ok]
            try:
                images = [it.image for it in ok]
                out = batch_fn(images, preps) if all(p is not None for p in preps) else batch_fn(images)
                for it, res in zip(ok, out, strict=True):
                    results[id(it)] = (res, None, "")
                ok = []
            except Exception as e:  # isolate the bad image: fall through to one at a time
                if is_sticky_device_error(e):  # no retry: every call would fail the same way
                    results.update({id(it): (None, None, "left") for it in ok[1:]})
                    results[id(ok[0])], ok = (None, e, "device"), []
        for k, it in enumerate(ok):
            try:
                results[id(it)] = (self._label_one(it), None, "")
            except Exception as e:  # one bad image never kills the job
                sticky = is_sticky_device_error(e)
                results[id(it)] = (None, e, "device" if sticky else "label")
                if sticky:
                    results.update({id(rest): (None, None, "left") for rest in ok[k + 1 :]})
                    break
        return [(it, *results[id(it)]) for it in group]

    def _label_one(self, item: _Decoded) -> LabelResult:
        if item.prepared is not None:
            return self.labeler.finish(self.labeler.start(item.prepared))  # type: ignore[attr-defined]
        return self.labeler(item.image)  # type: ignore[arg-type]

    def _one_ahead(self, stream: Iterator[_Decoded]) -> Iterator[list[Outcome]]:
        """One image at a time, the next one started before this one is finished: its encoder runs (on
        a second CUDA stream) while this image is decoded, filtered and classified. Labelers without
        ``start`` / ``finish`` are called image by image."""
        prepare, start, finish = (getattr(self.labeler, n, None) for n in ("prepare", "start", "finish"))
        if prepare is None or start is None or finish is None:
            yield from (self._label_group([item]) for item in stream)
            return
        pending: tuple[_Decoded, Any] | None = None
        for item in stream:
            ok = item.error is None and item.prepared is not None
            started = (item, start(item.prepared) if ok else None)  # never raises: errors come at finish
            if pending is not None:
                yield [self._finish_one(finish, *pending)]
            pending = started
        if pending is not None:
            yield [self._finish_one(finish, *pending)]

    @staticmethod
    def _finish_one(finish: Callable[[Any], LabelResult], item: _Decoded, started: Any) -> Outcome:
        if started is None:
            return (item, None, item.error, item.stage)
        try:
            return (item, finish(started), None, "")
        except Exception as e:  # one bad image never kills the job
            return (item, None, e, "device" if is_sticky_device_error(e) else "label")

    # ------------------------------------------------------------------- run
    def run(self) -> JobSummary:
        """Label every sample not yet done. Raises JobAbortedError past ``max_errors``."""
        t_start = time.perf_counter()
        prepare_output(self.out, self.manifest)
        if self.shard[1] == 1:  # a shard's worker shares the folder with the other shards' in-flight temps
            remove_stale_temps(self.out)  # (``label --devices`` removes the stale ones before its workers)
        compact_errors(self.out, self.errors_path)
        summary = JobSummary(total=len(self.samples), errors_path=str(self.errors_path))
        todo = [s for s in self.samples if not is_done(self.out, s.id)]
        summary.skipped = summary.total - len(todo)
        stats = LoadStats()
        timings: dict[str, float] = {}

        writes: queue.Queue[tuple[Sample, LabelResult] | None] = queue.Queue(maxsize=self.prefetch)
        write_errors: list[tuple[Sample, BaseException]] = []
        written = [0]
        stop: list[OSError] = []  # the first failed write: nothing more is labeled or written
        lock = threading.Lock()

        def writer() -> None:
            while (item := writes.get()) is not None:
                if stop:
                    continue  # drain: after a failed write nothing more is written
                try:
                    write_result(self.out, *item)
                    written[0] += 1
                except OSError as e:  # disk full, permission, read-only: stop the job
                    stop.append(e)
                except Exception as e:
                    with lock:
                        write_errors.append((item[0], e))
                    add_errors(self.error_count, 1)

        wthread = threading.Thread(target=writer, name="label-writer", daemon=True)
        wthread.start()
        done = summary.skipped
        aborted: str | None = None
        reached: set[str] = set()  # ids labeled or failed in this run
        device_lost: tuple[Sample, BaseException] | None = None
        stream = self._decoded_stream(todo, stats)
        batches: Iterator[list[Outcome]] = iter(())
        try:
            batches = (
                self._one_ahead(stream)
                if self.image_batch == 1
                else (self._label_group(g) for g in self._groups(stream))
            )
            for outcomes in batches:
                for item, result, err, stage in outcomes:
                    if stage == "left":
                        continue
                    if stage == "device":
                        device_lost = (item.sample, err)  # type: ignore[assignment]
                        record_error(self.errors_path, error_record(item.sample, err, "label"))
                        continue
                    reached.add(item.sample.id)
                    if result is not None:
                        for k, v in result.meta.get("timings_s", {}).items():
                            timings[k] = timings.get(k, 0.0) + float(v)
                        writes.put((item.sample, result))
                    else:
                        summary.failed += 1
                        add_errors(self.error_count, 1)
                        record_error(self.errors_path, error_record(item.sample, err, stage))
                    done += 1
                    if self.on_progress:
                        self.on_progress(done, summary.total, item.sample.id)
                if stop or device_lost:
                    break
                total_failed = int(self.error_count.value)
                if self.max_errors is not None and total_failed > self.max_errors:
                    aborted = f"{total_failed} images failed (max_errors={self.max_errors})"
                    break
        except OSError as e:  # errors.jsonl could not be written
            stop.append(e)
        finally:
            for gen in (batches, stream):  # stop decoding now: the decode pool shuts down
                getattr(gen, "close", lambda: None)()
            writes.put(None)
            wthread.join()
        summary.labeled = written[0]
        summary.seconds = round(time.perf_counter() - t_start, 3)
        summary.load_stats = stats.to_dict()
        summary.timings_s = {k: round(v, 3) for k, v in timings.items()}
        if stop:
            raise JobAbortedError(
                f"{stop[0]}; stopped after {summary.labeled} of {len(todo)} images to label "
                "(nothing half-written is left); free the space or fix the folder, then rerun to resume",
                summary,
            ) from stop[0]
        for sample, e in write_errors:
            summary.failed += 1
            record_error(self.errors_path, error_record(sample, e, "write"))
        ids = {s.id for s in self.samples}
        compact_errors(self.out, self.errors_path, ids)  # one line per image still failing
        i, n = self.shard
        status = self.out / "shards" / f"{i}-of-{n}.json"
        left = [s.id for s in todo if s.id not in reached] if device_lost else []
        record = {
            **summary.to_dict(),
            **({"stopped": first_line(device_lost[1]), "left": left} if device_lost else {}),
        }
        atomic_write_json(status, record)
        if device_lost:
            raise DeviceLostError(
                f"{self.out}: device error on {device_lost[0].id} ({first_line(device_lost[1])}); the GPU is "
                f"unusable in this process: stopped with {len(left)} of {len(todo)} images left (listed in "
                f"{status}); check the GPU (nvidia-smi), then rerun to resume",
                summary,
                left,
            )
        if aborted:
            raise JobAbortedError(f"{self.out}: stopped early: {aborted}; see {self.errors_path}", summary)
        return summary
