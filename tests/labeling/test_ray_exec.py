"""The Ray Data executor (CPU prepare tasks → labeling actors → CPU write tasks) on a local Ray with two CPU
actors and the shipped toy SAM and CLIP: the same files as the local job, failures recorded, reruns idle."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import numpy as np
import pytest

from zsplg_fast.config import load_config
from zsplg_fast.data import Sample, load_image, open_source, read_label
from zsplg_fast.data.synthetic import make_toy_world
from zsplg_fast.labeling.build import build_labeler, labeler_factory
from zsplg_fast.labeling.job import LabelJob

ray = pytest.importorskip("ray", reason="ray is not installed (pip install 'zsplg-fast[dist]')")
pytestmark = pytest.mark.ray

TOY_CI = Path(__file__).parents[2] / "zsplg_fast" / "configs" / "toy_ci.yaml"


@pytest.fixture(scope="module")
def local_ray():
    # 4 logical CPUs: 2 actors of 1 CPU each, plus room for the prepare and write tasks
    ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False, ignore_reinit_error=True)
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
        return int(done.value.code or 0), captured.out, captured.err

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
    image = load_image(data / lines[2].split()[0])
    assert read_label(out / "labels" / f"{ids[2]}.png").shape == image.shape[:2]
