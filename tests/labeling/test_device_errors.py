"""A sticky CUDA error (injected on the CPU with torch's / onnxruntime's texts) stops the label job at once
with the images left recorded; ``max_errors`` counts the failures of jobs that share a folder together."""

from __future__ import annotations

import json
import multiprocessing as mp
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from zsplg_fast.data import open_source, read_label
from zsplg_fast.data.synthetic import generate_dataset
from zsplg_fast.labeling.device_errors import is_sticky_device_error
from zsplg_fast.labeling.job import DeviceLostError, JobAbortedError, LabelJob
from zsplg_fast.labeling.labeler import LabelResult

# texts as torch (c10/cuda/CUDAException) and onnxruntime (CUDA_CALL) raise them
TORCH_ILLEGAL = (
    "CUDA error: an illegal memory access was encountered\n"
    "CUDA kernel errors might be asynchronously reported at some other API call, so the stacktrace "
    "below might be incorrect.\nFor debugging consider passing CUDA_LAUNCH_BLOCKING=1"
)
ORT_ECC = "CUDA failure 214: uncorrectable ECC error encountered ; GPU=0 ; hostname=n1 ; expr=cudaMemcpy"


def _threshold(image: np.ndarray) -> LabelResult:
    return LabelResult((image.mean(-1) > 128).astype(np.uint8), {"num_masks": 1})


class BrokenGpu:
    """Labels ``good`` images, then every call fails with ``text`` (as a poisoned CUDA context does)."""

    def __init__(self, good: int, text: str, batched: bool = False) -> None:
        self.good, self.text, self.calls = good, text, 0
        if batched:
            self.label_batch = lambda images: [self(im) for im in images]

    def __call__(self, image: np.ndarray) -> LabelResult:
        self.calls += 1
        if self.calls > self.good:
            import torch

            raise torch.AcceleratorError(self.text)
        return _threshold(image)


@pytest.fixture(scope="module")
def synth(tmp_path_factory: pytest.TempPathFactory) -> Any:
    root = tmp_path_factory.mktemp("synth")
    generate_dataset(root, num=8, num_classes=3, seed=1, size=48)
    return open_source(f"synthetic:{root}")


def test_sticky_texts() -> None:
    assert is_sticky_device_error(RuntimeError(TORCH_ILLEGAL)) and is_sticky_device_error(
        RuntimeError(ORT_ECC)
    )
    assert is_sticky_device_error(RuntimeError("CUDA error: unspecified launch failure"))
    assert not is_sticky_device_error(RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB"))
    assert not is_sticky_device_error(ValueError("image has 4 channels"))


@pytest.mark.parametrize(("image_batch", "text"), [(1, TORCH_ILLEGAL), (2, ORT_ECC)])
def test_cuda_error_stops_the_job_and_records_the_images_left(
    synth: Any, tmp_path: Path, image_batch: int, text: str
) -> None:
    out = tmp_path / "out"
    lab = BrokenGpu(good=3, text=text, batched=image_batch > 1)
    job = LabelJob(synth.samples, out, lab, {"fingerprint": "g"}, io_workers=0, image_batch=image_batch)
    with pytest.raises(DeviceLostError) as info:
        job.run()
    # one at a time: images 0-2 labeled, 3 struck; in pairs: the pair (2, 3) failed as one call
    n_ok = 3 if image_batch == 1 else 2
    msg = str(info.value)
    assert "\n" not in msg and "device error on" in msg and f"{8 - n_ok} of 8 images left" in msg
    assert lab.calls == 4  # no image tried after the error (no retry one by one, no later image)
    ids = [s.id for s in synth.samples]
    status = json.loads((out / "shards" / "0-of-1.json").read_text())
    assert status["left"] == ids[n_ok:] == info.value.left and status["labeled"] == n_ok
    assert status["failed"] == 0 and "AcceleratorError" in status["stopped"]
    assert sorted(p.stem for p in (out / "labels").glob("*.png")) == sorted(ids[:n_ok])
    errors = [json.loads(x) for x in (out / "errors.jsonl").read_text().splitlines()]
    assert [e["id"] for e in errors] == [ids[n_ok]]
    # the GPU is fine again (new process): the rerun labels exactly the images left
    again = LabelJob(synth.samples, out, _threshold, {"fingerprint": "g"}, io_workers=0).run()
    assert (again.skipped, again.labeled, again.failed) == (n_ok, 8 - n_ok, 0)
    for s in synth.samples:
        np.testing.assert_array_equal(
            read_label(out / "labels" / f"{s.id}.png"), _threshold(s.load_image()).label
        )


def test_max_errors_counts_the_failures_of_jobs_sharing_a_folder(synth: Any, tmp_path: Path) -> None:
    """Two shards (as two ``--devices`` workers) with 2 unreadable images each and max_errors=2: the second
    shard's job stops (4 failures in all); each alone would have finished."""
    from zsplg_fast.data import Sample

    shared = mp.get_context("spawn").Value("i", 0)
    out = tmp_path / "out"

    def shard(k: int) -> list[Any]:
        bad = [Sample(f"bad{k}{i}", tmp_path / f"missing{k}{i}.jpg", None) for i in range(2)]
        return [*bad, *synth.samples[4 * k : 4 * k + 4]]

    def job(k: int, count: Any) -> LabelJob:
        return LabelJob(
            shard(k),
            out,
            _threshold,
            {"fingerprint": "m"},
            shard=(k, 2),
            max_errors=2,
            io_workers=0,
            error_count=count,
        )

    first = job(0, shared).run()
    assert (first.failed, first.labeled) == (2, 4)
    with pytest.raises(JobAbortedError, match="3 images failed"):
        job(1, shared).run()
    alone = LabelJob(shard(1), tmp_path / "alone", _threshold, {"fingerprint": "m"}, max_errors=2).run()
    assert (alone.failed, alone.labeled) == (2, 4)
