"""The Ray Data executor (CPU prepare tasks → labeling actors → CPU write tasks) on a local Ray with two CPU
actors and the shipped toy SAM and CLIP: the same files as the local job, failures recorded, reruns idle."""

from __future__ import annotations

import functools
import json
import re
from pathlib import Path

import numpy as np
import pytest

from zsplg_fast.config import load_config
from zsplg_fast.data import Sample, open_source, read_label
from zsplg_fast.data.synthetic import make_toy_world
from zsplg_fast.labeling.build import build_labeler, labeler_factory
from zsplg_fast.labeling.job import LabelJob

ray = pytest.importorskip("ray", reason="ray is not installed (pip install 'zsplg-fast[dist]')")
pytestmark = pytest.mark.ray

TOY_CI = Path(__file__).parents[2] / "zsplg_fast" / "configs" / "toy_ci.yaml"
_RAY_LOG = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}\t[A-Z]+ \S+:\d+ -- ")


@pytest.fixture(scope="module")
def local_ray():
    # 4 logical CPUs: 2 actors of 1 CPU each, plus room for the prepare and write tasks; 2 logical GPUs
    # (torch in an actor given one still sees no CUDA: GPU scheduling checked on a CPU machine)
    ray.init(num_cpus=4, num_gpus=2, include_dashboard=False, log_to_driver=False, ignore_reinit_error=True)
    yield
    ray.shutdown()


def _meta(out: Path, sid: str) -> dict:
    meta = json.loads((out / "meta" / f"{sid}.json").read_text())
    meta.pop("timings_s")
    return meta


def test_ray_pipeline_writes_the_local_jobs_files_and_reruns_idle(local_ray, tmp_path):
    from zsplg_fast.labeling.ray_exec import PrepareSpec, run_ray

    data = tmp_path / "world"
    make_toy_world(data, "ci")
    src = open_source(f"synthetic:{data}", "unlabeled")
    (tmp_path / "broken.jpg").write_text("not an image")
    samples = [*src.samples[:4], Sample("broken", tmp_path / "broken.jpg", None)]
    cfg = load_config(TOY_CI, {"classify.classes": str(data / "classes.txt"), "label.io_workers": 0})
    built = build_labeler(cfg)
    manifest = built.manifest

    local = LabelJob(samples, tmp_path / "local", built.labeler, manifest).run()
    factory = functools.partial(labeler_factory, cfg)
    spec = PrepareSpec.of(built.labeler)
    dist = run_ray(samples, tmp_path / "ray", factory, manifest, spec, workers=2, batch_size=2)
    assert (dist.labeled, dist.failed) == (local.labeled, local.failed) == (4, 1)
    for s in src.samples[:4]:
        a = read_label(tmp_path / "local" / "labels" / f"{s.id}.png")
        b = read_label(tmp_path / "ray" / "labels" / f"{s.id}.png")
        np.testing.assert_array_equal(a, b)
        assert len(np.unique(a)) > 1  # trained toy models: real objects, not one flat class
        assert _meta(tmp_path / "local", s.id) == _meta(tmp_path / "ray", s.id)
    err = json.loads((tmp_path / "ray" / "errors.jsonl").read_text())
    assert err["id"] == "broken" and err["error"] == "InputImageError" and err["stage"] == "load"

    mtimes = sorted(p.stat().st_mtime_ns for p in (tmp_path / "ray" / "labels").glob("*.png"))
    again = run_ray(samples, tmp_path / "ray", factory, manifest, spec, workers=1, batch_size=2)
    assert (again.labeled, again.skipped, again.failed) == (0, 4, 1)
    assert sorted(p.stat().st_mtime_ns for p in (tmp_path / "ray" / "labels").glob("*.png")) == mtimes


def test_write_stage_stops_at_the_first_failed_write(tmp_path):
    """No Ray needed: an OSError on write is 'stop' (the driver stops the job), the batch's later rows are
    not written; another error is a failed image, as in the local job."""
    from zsplg_fast.labeling.ray_exec import _columns, _status, write_batch

    (tmp_path / "labels" / "b.png").mkdir(parents=True)  # a folder in the way of b's label
    rows = []
    for sid in ("a", "b", "c"):
        meta = "{}" if sid != "a" else "not json"  # a: an error that is not the folder's
        rows.append(
            {**_status(sid, f"/img/{sid}.jpg", "ok"), "label": np.zeros((2, 3), np.uint8), "meta": meta}
        )
    out = write_batch(_columns(rows, [*rows[0]]), str(tmp_path))
    assert list(out["status"]) == ["failed", "stop", "unwritten"]
    assert "Is a directory" in out["message"][1] and str(tmp_path / "labels" / "b.png") in out["message"][1]
    assert not (tmp_path / "labels" / "c.png").exists() and not (tmp_path / "meta" / "c.json").exists()


def test_a_failed_write_under_ray_stops_with_exit_1_and_a_rerun_resumes(local_ray, tmp_path, capsys):
    """As the README says for every executor: stop at the first failed write (here a folder in the way of
    one label PNG), exit 1 with the counts so far, the image not recorded as a failed one; a rerun
    (the folder fixed) labels the rest."""
    from zsplg_fast.cli.main import main
    from zsplg_fast.utils.outdir import write_marker

    data = tmp_path / "world"
    make_toy_world(data, "ci")
    lines = (data / "splits" / "unlabeled.txt").read_text().splitlines()[:6]
    (tmp_path / "six.txt").write_text("\n".join(lines) + "\n")
    ids = [Path(line.split()[0]).stem for line in lines]
    out = tmp_path / "out"
    write_marker(out, "label")  # a label folder, with a folder where the 3rd image's PNG goes
    blocker = out / "labels" / f"{ids[2]}.png"
    blocker.mkdir(parents=True)
    argv = [
        "label",
        "--config",
        str(TOY_CI),
        "--data",
        f"synthetic:{data}",
        "--split",
        str(tmp_path / "six.txt"),
    ]
    argv += [
        "--classes",
        str(data / "classes.txt"),
        "--out",
        str(out),
        "--executor",
        "ray",
        "--ray-batch",
        "2",
    ]

    def run() -> tuple[int, str, str]:
        with pytest.raises(SystemExit) as done:
            main(argv)
        captured = capsys.readouterr()
        # Ray Data's own log lines ("<date> <time>,<ms>\tLEVEL file.py:N -- ...", its progress and its
        # num_cpus+num_gpus warning) may reach this stderr; the CLI's own output is the rest
        ours = [line for line in captured.err.splitlines() if not _RAY_LOG.match(line)]
        return int(done.value.code or 0), captured.out, "\n".join(ours)

    rc, stdout, err = run()
    assert rc == 1, err
    ours = [line for line in err.splitlines() if line.startswith("error:")]  # Ray logs its own INFO lines
    assert len(ours) == 1 and "Traceback" not in err, err
    assert f"{blocker}: cannot write: Is a directory" in ours[0] and "rerun to resume" in ours[0]
    assert "labeled" in stdout and "failed" in stdout  # the counts so far
    errors = out / "errors.jsonl"
    assert not errors.exists() or ids[2] not in errors.read_text()  # not a failed image
    assert not (out / "meta" / f"{ids[2]}.json").exists()
    blocker.rmdir()
    rc, stdout, err = run()
    assert rc == 0, err
    assert all((out / "meta" / f"{sid}.json").is_file() for sid in ids)
    from PIL import Image

    with Image.open(data / lines[2].split()[0]) as im:  # the once-blocked label, at its image's size
        assert read_label(out / "labels" / f"{ids[2]}.png").shape == (im.height, im.width)


def _actor_resources() -> dict[str, dict[str, float]]:
    """Actor id → the resources it was scheduled with, from the GCS actor table (Ray 2.60's
    ``ray._private.state.actors()`` leaves ``required_resources`` out of its dicts)."""
    from ray._private.state import state
    from ray.core.generated import gcs_pb2

    rows = state._connect_and_get_accessor().get_actor_table(None, None)
    return {
        r.actor_id.hex(): dict(r.required_resources) for r in map(gcs_pb2.ActorTableData.FromString, rows)
    }


def test_ray_from_another_folder_on_gpu_actors_then_a_lost_device(local_ray, tmp_path, monkeypatch):
    """A new user's relative paths (classes auto → out/classes.txt) from another folder than the actors',
    1 GPU per actor by default; then an actor whose CUDA context is lost stops the job."""

    from zsplg_fast.data.synthetic import generate_dataset
    from zsplg_fast.labeling.job import DeviceLostError
    from zsplg_fast.labeling.ray_exec import PrepareSpec, run_ray
    from zsplg_fast.labeling.run import label_dataset

    generate_dataset(tmp_path / "world", num=4, num_classes=3, seed=1, size=64)
    lines = (tmp_path / "world" / "splits" / "unlabeled.txt").read_text().splitlines(True)[:2]
    (tmp_path / "two.txt").write_text("".join(lines))
    work = tmp_path / "elsewhere"
    work.mkdir()
    monkeypatch.chdir(work)  # the actors' working folder is the one ray was started in
    over = {"data.source": "synthetic:../world", "data.split": "../two.txt", "label.out": "out"}
    cfg = load_config(TOY_CI, {**over, "label.executor": "ray", "label.ray_batch": 1})
    before = set(_actor_resources())
    summary = label_dataset(cfg)
    assert (summary.labeled, summary.failed) == (2, 0), (work / "out" / "errors.jsonl").read_text()
    new = {k: r for k, r in _actor_resources().items() if k not in before}  # the labeling actor + Ray Data's
    gpu = [r for r in new.values() if r.get("GPU")]
    assert [(r.get("CPU"), r["GPU"]) for r in gpu] == [(1.0, 1.0)], new  # 1 actor, 1 GPU by default (auto)
    status = json.loads((work / "out" / "shards" / "0-of-1.json").read_text())
    assert status["num_gpus_per_worker"] == 1.0
    assert status["paths"]["classify.classes"] == str(work / "out" / "classes.txt")

    spec = PrepareSpec.from_config(cfg)

    class LostDevice:  # a labeler whose CUDA context is gone (defined here: pickled by value to the actor)
        masks = type("M", (), {"image_size": spec.sam_size, "cfg": spec.amg, "generate_prepared": None})()
        classifier = type("C", (), {"image_size": spec.clip_size, "mean": (0.5,) * 3, "std": (0.5,) * 3})()
        work_long_side = spec.work_long_side

        def label_prepared(self, prepared, clip):
            raise RuntimeError("CUDA error: an illegal memory access was encountered\nCUDA kernel errors ...")

    samples = open_source(f"synthetic:{tmp_path / 'world'}").samples[:3]
    with pytest.raises(DeviceLostError, match="3 of 3 images left") as info:
        run_ray(samples, tmp_path / "lost", LostDevice, {"fingerprint": "x"}, spec, batch_size=1)
    assert info.value.left == [s.id for s in samples]
    lost = json.loads((tmp_path / "lost" / "shards" / "0-of-1.json").read_text())
    assert lost["left"] == info.value.left and "illegal memory access" in lost["stopped"]
    errors = [json.loads(x) for x in (tmp_path / "lost" / "errors.jsonl").read_text().splitlines()]
    assert len(errors) == 1 and "illegal memory access" in errors[0]["message"]


def test_ray_labels_with_a_sam2_proposer_as_the_local_job(local_ray, tmp_path, sam2_tiny_ckpt):
    """``label --executor ray`` with ``sam.variant: sam2_tiny`` and its official .pt: the actor builds SAM 2
    from the checkpoint, the CPU prepare stage does SAM 2's square resize; the labels are the local job's,
    the driver's manifest records the proposer (family, checkpoint sha256) as the local one does, and a
    rerun on Ray skips every image."""
    from PIL import Image

    from zsplg_fast.labeling.run import label_dataset

    rng = np.random.default_rng(0)
    (tmp_path / "imgs").mkdir()
    for name, (h, w) in (("a", (60, 88)), ("b", (72, 56))):
        img = np.zeros((h, w, 3), np.uint8) + rng.integers(0, 255, 3, dtype=np.uint8)
        img[h // 4 : h // 2, w // 3 : w - 4] = rng.integers(0, 255, 3, dtype=np.uint8)
        Image.fromarray(img).save(tmp_path / "imgs" / f"{name}.png")
    (tmp_path / "classes.txt").write_text("background\ncircle\nsquare\n")
    over = {
        "data.source": f"folder:{tmp_path / 'imgs'}",
        "classify.classes": str(tmp_path / "classes.txt"),
        "sam.variant": "sam2_tiny",
        "sam.checkpoint": str(sam2_tiny_ckpt),
        "amg.points_per_side": 4,
        "amg.pred_iou_thresh": 0.0,
        "amg.stability_score_thresh": 0.0,
        "label.device": "cpu",
        "label.io_workers": 0,
    }

    def cfg(out, **extra):
        return load_config(TOY_CI, {**over, "label.out": str(tmp_path / out), **extra})

    local = label_dataset(cfg("local"))
    dist = label_dataset(cfg("ray", **{"label.executor": "ray", "label.num_gpus_per_worker": 0}))
    assert (dist.labeled, dist.failed) == (local.labeled, local.failed) == (2, 0)
    for sid in ("a", "b"):
        a = read_label(tmp_path / "local" / "labels" / f"{sid}.png")
        b = read_label(tmp_path / "ray" / "labels" / f"{sid}.png")
        np.testing.assert_array_equal(a, b)
        assert _meta(tmp_path / "local", sid) == _meta(tmp_path / "ray", sid)
    m_local, m_ray = (json.loads((tmp_path / d / "manifest.json").read_text()) for d in ("local", "ray"))
    assert m_ray["proposer"] == m_local["proposer"] and m_ray["proposer"]["family"] == "sam2"
    assert (
        m_ray["proposer"]["sha256"] == m_local["weights"]["sam"]
        and m_ray["fingerprint"] == m_local["fingerprint"]
    )
    again = label_dataset(cfg("ray", **{"label.executor": "ray", "label.num_gpus_per_worker": 0}))
    assert (again.labeled, again.skipped) == (0, 2)
