"""Issue 20 (12): at the default ``image_batch: 1`` the job starts image i+1 (its encoder, on a second
CUDA stream) before image i is decoded and filtered, and the labeler's resizes run in the decode worker
threads. On a CPU the generator's ``overlap=True`` runs the CUDA schedule sequentially, so these tests
see its order of calls; the labels and masks equal the sequential path's exactly."""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from zsplg_fast.bench.synthetic_sam import build_colour_sam, sam_module_engines
from zsplg_fast.config.labeling import AmgConfig
from zsplg_fast.data import open_source
from zsplg_fast.data.synthetic import generate_dataset
from zsplg_fast.labeling import labeler as labeler_mod
from zsplg_fast.labeling.amg import MaskGenerator
from zsplg_fast.labeling.classify import MaskClassifier
from zsplg_fast.labeling.job import LabelJob
from zsplg_fast.labeling.labeler import ZeroShotLabeler
from zsplg_fast.labeling.proposers import SamProposer

torch.set_num_threads(1)
CFG = AmgConfig(points_per_side=4, pred_iou_thresh=0.0, stability_score_thresh=0.5)


@pytest.fixture(scope="module")
def synth(tmp_path_factory: pytest.TempPathFactory) -> Any:
    root = tmp_path_factory.mktemp("synth")
    generate_dataset(root, num=4, num_classes=3, seed=3, size=96)
    return open_source(f"synthetic:{root}")


@pytest.fixture(scope="module")
def engines() -> tuple[Any, Any]:
    return sam_module_engines(build_colour_sam(256))


class _Logged:
    """An engine that appends its name to ``log`` on every call (``fail_on``: raise on that call)."""

    def __init__(self, inner: Any, name: str, log: list[str], fail_on: int | None = None) -> None:
        self.inner, self.name, self.log, self.fail_on = inner, name, log, fail_on
        self.inputs, self.outputs, self.device = inner.inputs, inner.outputs, inner.device
        self.calls = 0

    def __call__(self, feeds: dict[str, Any]) -> dict[str, Any]:
        self.calls += 1
        self.log.append(self.name)
        if self.calls == self.fail_on:
            raise RuntimeError("encoder exploded")
        return self.inner(feeds)


@dataclass
class _ThreadProposer(SamProposer):
    """SAM's conventions; records the thread each encoder resize ran on."""

    threads: list[str] | None = None

    def resize(self, crop: np.ndarray, image_size: int) -> np.ndarray:
        assert self.threads is not None
        self.threads.append(threading.current_thread().name)
        return super().resize(crop, image_size)


def _labeler(engines: tuple[Any, Any], overlap: bool, log: list[str], **kw: Any) -> ZeroShotLabeler:
    enc, dec = engines
    gen = MaskGenerator(
        _Logged(enc, "enc", log, kw.pop("fail_on", None)),
        _Logged(dec, "dec", log),
        CFG,
        prompt_batch=8,  # 16 prompts: 2 decoder calls per image
        overlap=overlap,
        **kw,
    )

    def dense(x: torch.Tensor) -> torch.Tensor:  # colour features: masks of different colours differ
        f = torch.nn.functional.avg_pool2d(x, 4)
        return torch.nn.functional.normalize(f - f.mean(dim=(2, 3), keepdim=True), dim=1)

    clf = MaskClassifier(dense, torch.eye(3), image_size=32, mean=(0.5,) * 3, std=(0.5,) * 3)
    return ZeroShotLabeler(gen, clf, work_long_side=80, check_first=0)  # 96 px images: resized to 80


def _run(synth: Any, out: Path, labeler: ZeroShotLabeler, **kw: Any) -> Any:
    return LabelJob(synth.samples, out, labeler, {"fingerprint": "f"}, io_workers=2, **kw).run()


def _outputs(out: Path) -> dict[str, Any]:
    got: dict[str, Any] = {}
    for png in sorted((out / "labels").glob("*.png")):
        meta = json.loads((out / "meta" / f"{png.stem}.json").read_text())
        meta.pop("timings_s", None)
        got[png.stem] = (png.read_bytes(), meta)
    return got


def test_overlap_gives_the_sequential_labels_and_masks(synth: Any, engines: Any, tmp_path: Path) -> None:
    on, off = [], []
    s_on = _run(synth, tmp_path / "on", _labeler(engines, True, on))
    s_off = _run(synth, tmp_path / "off", _labeler(engines, False, off))
    assert s_on.labeled == s_off.labeled == 4 and s_on.failed == s_off.failed == 0
    a, b = _outputs(tmp_path / "on"), _outputs(tmp_path / "off")
    assert len(a) == 4 and a.keys() == b.keys()
    assert sum(m["num_masks"] for _, m in a.values()) >= 4  # masks (with RLEs) really compared
    for k in a:
        assert a[k] == b[k]  # label PNG bytes and every mask's RLE, box, scores, class
    # the image-batched path (image_batch 2) gives them too
    _run(synth, tmp_path / "batched", _labeler(engines, False, []), image_batch=2)
    assert _outputs(tmp_path / "batched") == b


def test_next_encoder_is_launched_before_this_image_is_decoded(
    synth: Any, engines: Any, tmp_path: Path
) -> None:
    log: list[str] = []
    _run(synth, tmp_path / "on", _labeler(engines, True, log))
    # 4 images: image i+1's encoder comes before image i's two decoder calls (on CUDA: concurrently)
    assert log == ["enc", "enc", "dec", "dec", "enc", "dec", "dec", "enc", "dec", "dec", "dec", "dec"]
    seq: list[str] = []
    _run(synth, tmp_path / "off", _labeler(engines, False, seq))  # a CPU's default: the old order
    assert seq == ["enc", "dec", "dec"] * 4


def test_a_failing_next_encoder_fails_only_its_own_image(synth: Any, engines: Any, tmp_path: Path) -> None:
    log: list[str] = []
    s = _run(synth, tmp_path / "out", _labeler(engines, True, log, fail_on=2))  # image 1's encoder
    assert (s.labeled, s.failed) == (3, 1)
    errors = [json.loads(line) for line in Path(s.errors_path).read_text().splitlines()]
    assert [e["id"] for e in errors] == [synth.samples[1].id] and "encoder exploded" in json.dumps(errors)


def test_resizes_run_in_the_decode_workers(
    synth: Any, engines: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sam_resizes: list[str] = []
    working: list[str] = []
    to_working = labeler_mod.to_working

    def recording(image: np.ndarray, long_side: int) -> np.ndarray:
        working.append(threading.current_thread().name)
        return to_working(image, long_side)

    monkeypatch.setattr(labeler_mod, "to_working", recording)
    lab = _labeler(engines, True, [], proposer=_ThreadProposer(threads=sam_resizes))
    assert _run(synth, tmp_path / "out", lab).labeled == 4
    main = threading.main_thread().name
    assert len(sam_resizes) == len(working) == 4
    assert all(t.startswith("decode") and t != main for t in sam_resizes + working)
