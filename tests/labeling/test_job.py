import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from zsplg_fast.data import Sample, open_source, read_label
from zsplg_fast.data.synthetic import generate_dataset
from zsplg_fast.errors import OutputExistsError
from zsplg_fast.labeling.job import JobAbortedError, LabelJob
from zsplg_fast.labeling.labeler import LabelResult
from zsplg_fast.labeling.outputs import is_done


def threshold_labeler(image: np.ndarray) -> LabelResult:
    """Deterministic stand-in for the model: bright pixels → class 1."""
    return LabelResult((image.mean(-1) > 128).astype(np.uint8), {"num_masks": 1, "timings_s": {"masks": 0.0}})


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth")
    generate_dataset(root, num=12, num_classes=3, seed=1, size=64)
    return open_source(f"synthetic:{root}")


def _job(samples, out, **kw):
    return LabelJob(samples, out, threshold_labeler, {"fingerprint": "abc"}, **kw)


def test_labels_every_image_and_resume_skips(synth, tmp_path):
    out = tmp_path / "out"
    s1 = _job(synth.samples, out).run()
    assert (s1.total, s1.labeled, s1.skipped, s1.failed) == (12, 12, 0, 0)
    for s in synth.samples:
        lab = read_label(out / "labels" / f"{s.id}.png")
        exp = threshold_labeler(s.load_image()).label
        np.testing.assert_array_equal(lab, exp)
        meta = json.loads((out / "meta" / f"{s.id}.json").read_text())
        assert meta["id"] == s.id and meta["num_masks"] == 1
    s2 = _job(synth.samples, out).run()
    assert (s2.labeled, s2.skipped) == (0, 12)
    assert json.loads((out / "shards" / "0-of-1.json").read_text())["skipped"] == 12


def test_refuses_other_fingerprint_and_foreign_folder(synth, tmp_path):
    out = tmp_path / "out"
    _job(synth.samples[:2], out).run()
    with pytest.raises(OutputExistsError, match="fingerprint abc"):
        LabelJob(synth.samples, out, threshold_labeler, {"fingerprint": "zzz"}).run()
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "thesis.tex").write_text("do not touch")
    with pytest.raises(OutputExistsError, match="not empty"):
        _job(synth.samples, foreign).run()
    assert (foreign / "thesis.tex").read_text() == "do not touch"


def test_bad_images_are_recorded_counted_and_retried(synth, tmp_path):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"")
    samples = [*synth.samples[:3], Sample("bad", bad, None)]
    out = tmp_path / "out"
    s = _job(samples, out).run()
    assert (s.labeled, s.failed) == (3, 1)
    errs = [json.loads(x) for x in (out / "errors.jsonl").read_text().splitlines()]
    assert len(errs) == 1 and errs[0]["id"] == "bad" and errs[0]["error"] == "InputImageError"
    assert str(bad) in errs[0]["message"]
    # fix the file, rerun: it is retried and the stale error line disappears
    bad.write_bytes(Path(synth.samples[0].image_path).read_bytes())
    s = _job(samples, out).run()
    assert (s.labeled, s.skipped, s.failed) == (1, 3, 0)
    assert (out / "errors.jsonl").read_text() == ""


def test_max_errors_stops_the_run(synth, tmp_path):
    bad = [Sample(f"bad{i}", tmp_path / f"missing{i}.jpg", None) for i in range(3)]
    with pytest.raises(JobAbortedError, match="max_errors=1"):
        _job([*bad, *synth.samples], tmp_path / "out", max_errors=1, io_workers=0).run()
    assert not any(is_done(tmp_path / "out", s.id) for s in synth.samples[3:])


def test_labeler_exception_is_recorded(synth, tmp_path):
    def flaky(image):
        if image.mean() > 0 and flaky.calls == 1:
            flaky.calls += 1
            raise RuntimeError("out of memory (simulated)")
        flaky.calls += 1
        return threshold_labeler(image)

    flaky.calls = 0
    out = tmp_path / "out"
    s = LabelJob(synth.samples[:4], out, flaky, {"fingerprint": "f"}, io_workers=0).run()
    assert (s.labeled, s.failed) == (3, 1)
    rec = json.loads((out / "errors.jsonl").read_text())
    assert rec["stage"] == "label" and "out of memory" in rec["message"]


def test_shards_are_disjoint_and_cover(synth, tmp_path):
    from zsplg_fast.data import shard

    out = tmp_path / "out"
    for i in range(3):
        _job(shard(synth.samples, i, 3), out, shard=(i, 3)).run()
    assert all(is_done(out, s.id) for s in synth.samples)
    counts = [json.loads((out / "shards" / f"{i}-of-3.json").read_text())["labeled"] for i in range(3)]
    assert sum(counts) == 12


SLOW_JOB = textwrap.dedent(
    """
    import sys, time
    import numpy as np
    from zsplg_fast.data import open_source
    from zsplg_fast.labeling.job import LabelJob
    from zsplg_fast.labeling.labeler import LabelResult

    def slow(image):
        time.sleep(0.15)
        return LabelResult((image.mean(-1) > 128).astype(np.uint8), {"num_masks": 1})

    src = open_source("synthetic:" + sys.argv[1])
    LabelJob(src.samples, sys.argv[2], slow, {"fingerprint": "kill"}).run()
    """
)


def test_sigkill_mid_run_then_rerun_leaves_exactly_one_valid_png_each(synth, tmp_path):
    out = tmp_path / "out"
    script = tmp_path / "job.py"
    script.write_text(SLOW_JOB)
    proc = subprocess.Popen([sys.executable, str(script), str(synth.root), str(out)])
    deadline = time.time() + 60
    while time.time() < deadline:
        done = len(list((out / "meta").glob("*.json"))) if (out / "meta").exists() else 0
        if done >= 3:
            break
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert 0 < len(list((out / "meta").glob("*.json"))) < 12
    s = LabelJob(synth.samples, out, threshold_labeler, {"fingerprint": "kill"}).run()
    assert s.labeled + s.skipped == 12 and s.failed == 0
    pngs = sorted(p.stem for p in (out / "labels").rglob("*.png"))
    assert pngs == sorted(x.id for x in synth.samples)
    assert not list(out.rglob("*.tmp"))
    for x in synth.samples:
        assert read_label(out / "labels" / f"{x.id}.png").shape == x.load_image().shape[:2]


class _HungryMasks:
    """Raises an out-of-memory error while its prompt batch is above ``fits``."""

    def __init__(self, fits: int, prompt_batch: int | None = None, auto: int | None = None) -> None:
        self.fits, self.prompt_batch, self.calls = fits, prompt_batch, 0
        self.auto = auto  # the automatic batch (MaskGenerator.batch_used), when it exposes one
        if auto is not None:
            self.batch_used = None

    def __call__(self, image):
        import torch

        from zsplg_fast.labeling.masks import MaskSet

        self.calls += 1
        if self.auto is not None:
            self.batch_used = self.prompt_batch or self.auto
        if (self.prompt_batch or self.auto or 64) > self.fits:
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
        h, w = image.shape[:2]
        m = torch.zeros((1, h, w), dtype=torch.bool)
        m[0, : h // 2] = True
        return MaskSet(m, torch.ones(1), torch.ones(1), torch.tensor([[0.0, 0.0, w, h / 2]]))


def test_out_of_memory_halves_prompt_batch_then_records_failure(synth, tmp_path):
    import torch

    from zsplg_fast.labeling.classify import MaskClassifier
    from zsplg_fast.labeling.labeler import ZeroShotLabeler

    feats = torch.zeros(1, 2, 4, 4)
    feats[0, 0] = 1.0
    clf = MaskClassifier(lambda x: feats, torch.eye(2), image_size=8, mean=(0, 0, 0), std=(1, 1, 1))
    source = _HungryMasks(fits=16)
    out = tmp_path / "out"
    s = LabelJob(synth.samples[:3], out, ZeroShotLabeler(source, clf), {"fingerprint": "oom"}).run()
    assert (s.labeled, s.failed) == (3, 0)
    assert source.prompt_batch == 16  # 64 → 32 → 16, kept for the next images
    metas = [json.loads((out / "meta" / f"{x.id}.json").read_text()) for x in synth.samples[:3]]
    assert [m["oom_halvings"] for m in metas] == [2, 0, 0]
    # an automatic batch of 8 (the CPU default for vit_b is 4): halved from 8, not from 64
    auto = _HungryMasks(fits=4, auto=8)
    s = LabelJob(
        synth.samples[:1], tmp_path / "out3", ZeroShotLabeler(auto, clf), {"fingerprint": "oom"}
    ).run()
    assert s.labeled == 1 and auto.prompt_batch == 4 and auto.calls == 2
    # nothing fits: the image is recorded as failed, the job goes on
    never = _HungryMasks(fits=0, prompt_batch=4)
    out2 = tmp_path / "out2"
    s = LabelJob(synth.samples[:2], out2, ZeroShotLabeler(never, clf), {"fingerprint": "oom"}).run()
    assert (s.labeled, s.failed) == (0, 2) and never.prompt_batch == 1
    rec = json.loads((out2 / "errors.jsonl").read_text().splitlines()[0])
    assert rec["stage"] == "label" and "out of memory" in rec["message"]


def test_image_batches_give_the_same_labels_and_isolate_bad_images(synth, tmp_path):
    class Batching:
        def __init__(self):
            self.batches = []

        def __call__(self, image):
            return threshold_labeler(image)

        def label_batch(self, images):
            self.batches.append(len(images))
            if any(im.shape[0] == 1 for im in images):
                raise ValueError("bad image in batch")
            return [threshold_labeler(im) for im in images]

    lab = Batching()
    out = tmp_path / "b"
    s = LabelJob(synth.samples, out, lab, {"fingerprint": "b"}, image_batch=4).run()
    assert s.labeled == 12 and lab.batches == [4, 4, 4]
    for x in synth.samples:
        np.testing.assert_array_equal(
            read_label(out / "labels" / f"{x.id}.png"), threshold_labeler(x.load_image()).label
        )
    # a failing batch falls back to one image at a time; the broken file is recorded alone
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG not really")
    thin = tmp_path / "thin.png"  # decodes fine, but makes the batch call raise
    from PIL import Image

    Image.new("RGB", (5, 1), (255, 255, 255)).save(thin)
    samples = [synth.samples[0], Sample("bad", bad, None), Sample("thin", thin, None), synth.samples[1]]
    lab = Batching()
    s = LabelJob(samples, tmp_path / "c", lab, {"fingerprint": "c"}, image_batch=4).run()
    assert (s.labeled, s.failed) == (3, 1) and lab.batches == [3]
    assert read_label(tmp_path / "c" / "labels" / "thin.png").tolist() == [[1, 1, 1, 1, 1]]


def test_label_grid_shows_image_label_and_truth(synth, tmp_path):
    from PIL import Image

    from zsplg_fast.labeling.run import write_label_grid

    out = tmp_path / "out"
    _job(synth.samples[:5], out).run()
    path = write_label_grid(out, synth.samples, 3, ["background", "a", "b", "c"])
    assert path == out / "overlays.png"
    im = np.asarray(Image.open(path))
    assert im.ndim == 3 and im.shape[2] == 3 and im.shape[0] > 3 * 64  # three rows of cells
    assert write_label_grid(tmp_path / "empty", synth.samples, 3, ["x"]) is None


def test_a_shard_worker_leaves_the_other_shards_temp_files(synth, tmp_path):
    # `label --devices` workers share one folder: a worker starting late removed the temp file another
    # was about to os.replace (FileNotFoundError on shards/0-of-2.json); only unsharded runs clean up
    from zsplg_fast.data import shard

    out = tmp_path / "out"
    _job(synth.samples[:1], out).run()
    inflight = out / "shards" / ".0-of-2.json.x1y2z3.tmp"
    inflight.write_text("{}")
    s = _job(shard(synth.samples, 1, 2), out, shard=(1, 2)).run()
    assert s.failed == 0 and inflight.is_file()
    _job(synth.samples, out).run()  # unsharded: a killed run's temp files are removed
    assert not inflight.exists()
