import json

import numpy as np
import pytest

from zsplg_fast.data import Sample, open_source, read_label
from zsplg_fast.data.synthetic import generate_dataset
from zsplg_fast.labeling.job import LabelJob
from zsplg_fast.labeling.labeler import LabelResult

ray = pytest.importorskip("ray", reason="ray is not installed (pip install 'zsplg-fast[dist]')")
pytestmark = pytest.mark.ray


def labeler_factory():
    """Picklable factory: what an actor builds once."""

    def label(image: np.ndarray) -> LabelResult:
        lab = np.where(image[..., 0] > image[..., 2], 1, 2).astype(np.uint8)
        return LabelResult(lab, {"num_masks": 2})

    return label


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, ignore_reinit_error=True)
    yield
    ray.shutdown()


def test_ray_outputs_identical_to_local_and_rerun_skips(local_ray, tmp_path):
    from zsplg_fast.labeling.ray_exec import run_ray

    root = tmp_path / "data"
    generate_dataset(root, num=6, num_classes=3, seed=3, size=48)
    src = open_source(f"synthetic:{root}")
    bad = Sample("broken", tmp_path / "broken.jpg", None)
    (tmp_path / "broken.jpg").write_text("not an image")
    samples = [*src.samples, bad]
    manifest = {"fingerprint": "ray-test"}

    local = LabelJob(samples, tmp_path / "local", labeler_factory(), manifest).run()
    dist = run_ray(samples, tmp_path / "ray", labeler_factory, manifest, workers=2)
    assert (dist.labeled, dist.failed) == (local.labeled, local.failed) == (6, 1)
    for s in src.samples:
        a = read_label(tmp_path / "local" / "labels" / f"{s.id}.png")
        b = read_label(tmp_path / "ray" / "labels" / f"{s.id}.png")
        np.testing.assert_array_equal(a, b)
        ma = json.loads((tmp_path / "local" / "meta" / f"{s.id}.json").read_text())
        mb = json.loads((tmp_path / "ray" / "meta" / f"{s.id}.json").read_text())
        assert ma == mb
    err = json.loads((tmp_path / "ray" / "errors.jsonl").read_text())
    assert err["id"] == "broken" and err["error"] == "InputImageError" and err["stage"] == "load"

    again = run_ray(samples, tmp_path / "ray", labeler_factory, manifest, workers=1)
    assert (again.labeled, again.skipped, again.failed) == (0, 6, 1)
