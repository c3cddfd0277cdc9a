"""``label --executor ray`` on the driver (the Ray pipeline itself replaced by a recorder): no model is
built, the prepare stage gets the sizes a built labeler has, the manifest has the local job's fingerprint,
and every path the actors get is absolute (the driver runs in another folder than the data)."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest

from zsplg_fast.config import load_config
from zsplg_fast.data.synthetic import generate_dataset

TOY_CI = Path(__file__).parents[2] / "zsplg_fast" / "configs" / "toy_ci.yaml"


def _no_model(*a: Any, **k: Any) -> Any:
    raise AssertionError("the ray driver built a model")


def test_driver_builds_no_model_and_hands_actors_absolute_paths(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import zsplg_fast.models as models
    from zsplg_fast.labeling import build, ray_exec, run
    from zsplg_fast.labeling.build import build_labeler
    from zsplg_fast.labeling.ray_exec import PrepareSpec
    from zsplg_fast.models import clip as clip_mod
    from zsplg_fast.models import sam as sam_mod

    generate_dataset(tmp_path / "world", num=4, num_classes=3, seed=1, size=64)
    (tmp_path / "two.txt").write_text(
        "".join((tmp_path / "world" / "splits" / "unlabeled.txt").read_text().splitlines(True)[:2])
    )
    work = tmp_path / "elsewhere"
    work.mkdir()
    monkeypatch.chdir(work)  # a new user's relative paths, from another folder
    given = {
        "data.source": "synthetic:../world",
        "data.split": "../two.txt",
        "classify.classes": "../world/classes.txt",
        "label.out": "out",
        "label.executor": "ray",
        "label.io_workers": 0,
    }
    cfg = load_config(TOY_CI, given)
    reference = build_labeler(cfg)  # what an actor builds (here, before the builders are taken away)
    load_kwargs = {"max_long_side": cfg.data.max_long_side, "rescale_high_bit_depth": False}
    want_spec = PrepareSpec.of(reference.labeler, load_kwargs)

    for mod, name in [(models, "build_sam"), (models, "build_clip"), (sam_mod, "build_sam")]:
        monkeypatch.setattr(mod, name, _no_model)
    monkeypatch.setattr(clip_mod, "build_clip", _no_model)
    monkeypatch.setattr(build, "Models", _no_model)
    monkeypatch.setattr(build, "build_labeler", _no_model)
    monkeypatch.setattr(run, "build_labeler", _no_model)
    seen: dict[str, Any] = {}

    def fake_run_ray(samples: Any, out: Any, factory: Any, manifest: Any, spec: Any, **kw: Any) -> Any:
        seen.update(samples=samples, out=out, factory=factory, manifest=manifest, spec=spec, kw=kw)
        return run.JobSummary(total=len(samples), labeled=len(samples))

    monkeypatch.setattr(ray_exec, "run_ray", fake_run_ray)
    summary = run.label_dataset(cfg)
    assert summary.labeled == 2
    assert seen["spec"] == want_spec  # the sizes a built labeler has (SAM's S, CLIP's input, work size)
    on_disk = json.loads((work / "out" / "manifest.json").read_text())
    for key in ("fingerprint", "weights", "classes", "class_synonyms"):
        assert on_disk[key] == reference.manifest[key], key  # a local run resumes this folder, and back
    world = str(tmp_path / "world")
    assert on_disk["paths"] == {
        "data.source": f"synthetic:{world}",
        "data.split": str(tmp_path / "two.txt"),
        "classify.classes": f"{world}/classes.txt",
        "label.out": str(work / "out"),
    }
    assert seen["kw"]["record"] == {"paths": on_disk["paths"]}
    run_cfg = seen["factory"].args[0]  # what the actors build from
    assert run_cfg.classify.classes == f"{world}/classes.txt" and run_cfg.label.out == str(work / "out")
    assert all(s.image_path.is_absolute() and s.image_path.is_file() for s in seen["samples"])
    assert Path(seen["out"]).is_absolute() and seen["kw"]["num_gpus_per_worker"] == "auto"


def test_artifact_and_weights_paths_are_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from zsplg_fast.labeling.ray_driver import absolute_paths

    monkeypatch.chdir(tmp_path)
    (tmp_path / "sam.pth").write_bytes(b"x")
    cfg = load_config(
        None,
        {
            "data.source": "coco:data:instances_val.json",
            "data.split": "val",  # a name, not a file here
            "classify.classes": "voc",
            "sam.checkpoint": "sam.pth",
            "clip.pretrained": "laion2b_s34b_b88k",  # an open_clip tag
            "label.backend": "trt",
        },
    )
    run_cfg, paths = absolute_paths(cfg)
    assert paths == {
        "data.source": "coco:data:instances_val.json",  # neither part is a file here: left to the source
        "sam.checkpoint": str(tmp_path / "sam.pth"),
        "label.out": str(tmp_path / "out"),
        "label.engines": str(tmp_path / "engines"),  # the trt backend's default folder
    }
    assert (run_cfg.data.split, run_cfg.classify.classes, run_cfg.clip.pretrained) == (
        "val",
        "voc",
        "laion2b_s34b_b88k",
    )
    (tmp_path / "data").mkdir()
    assert absolute_paths(cfg)[1]["data.source"] == f"coco:{tmp_path / 'data'}:instances_val.json"


def test_gpus_per_actor(caplog: pytest.LogCaptureFixture) -> None:
    from zsplg_fast.labeling.ray_exec import gpus_per_actor

    class Cluster:
        def __init__(self, gpus: float) -> None:
            self.gpus = gpus

        def cluster_resources(self) -> dict[str, float]:
            return {"CPU": 16.0, **({"GPU": self.gpus} if self.gpus else {})}

    with caplog.at_level(logging.WARNING):
        assert gpus_per_actor("auto", Cluster(4)) == 1.0
        assert not caplog.records
        assert gpus_per_actor("auto", Cluster(4), device="cpu") == 0.0
        assert gpus_per_actor(0.5, Cluster(0)) == 0.5
        assert gpus_per_actor("auto", Cluster(0)) == 0.0
    assert len(caplog.records) == 1 and "reports no GPUs" in caplog.records[0].getMessage()
    assert "\n" not in caplog.records[0].getMessage()
    assert load_config(None, {}).label.num_gpus_per_worker == "auto"


def test_clip_weights_fingerprint_without_a_model(tmp_path: Path) -> None:
    from zsplg_fast.errors import CheckpointError
    from zsplg_fast.models.clip import clip_weights_fingerprint
    from zsplg_fast.models.sam import RANDOM_INIT, sam_input_size, weights_fingerprint

    weights = tmp_path / "clip.bin"
    weights.write_bytes(b"w")
    assert clip_weights_fingerprint("ViT-B-16", str(weights)) == weights_fingerprint(weights)
    assert clip_weights_fingerprint("ViT-B-16", None) == RANDOM_INIT
    assert clip_weights_fingerprint("ViT-B-16", "laion2b_s34b_b88k") == "open_clip:ViT-B-16/laion2b_s34b_b88k"
    with pytest.raises(CheckpointError, match="not found"):
        clip_weights_fingerprint("ViT-B-16", str(tmp_path / "gone.bin"))
    assert (sam_input_size("vit_h"), sam_input_size("tiny")) == (1024, 256)  # meta device: no weights


class _FakeDataset:
    """Ray Data's calls as run_ray makes them, run in this process, stage after stage (no Ray)."""

    def __init__(self, rows: list[dict[str, Any]]) -> None:
        self.rows = rows

    def map_batches(
        self, fn: Any, fn_kwargs: Any = None, fn_constructor_kwargs: Any = None, **kw: Any
    ) -> Any:
        import numpy as np

        call = fn(**(fn_constructor_kwargs or {})) if isinstance(fn, type) else lambda b: fn(b, **fn_kwargs)
        out: list[dict[str, Any]] = []
        for i in range(0, len(self.rows), kw["batch_size"]):
            chunk = self.rows[i : i + kw["batch_size"]]
            batch = {}
            for k in chunk[0]:
                batch[k] = np.empty(len(chunk), dtype=object)
                batch[k][:] = [r[k] for r in chunk]
            res = call(batch)
            out += [{k: res[k][j] for k in res} for j in range(len(res["id"]))]
        return _FakeDataset(out)

    def iter_rows(self) -> Any:
        yield from self.rows


def test_ray_stops_at_a_lost_device_and_records_the_images_left(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The actor side (LabelStage) and the driver side (run_ray) of a sticky CUDA error, with Ray Data's
    stages run in-process: the actor labels nothing after the error, the driver stops the job."""
    from types import SimpleNamespace

    from zsplg_fast.data import open_source
    from zsplg_fast.labeling import ray_exec
    from zsplg_fast.labeling.job import DeviceLostError

    generate_dataset(tmp_path / "world", num=4, num_classes=3, seed=1, size=64)
    samples = open_source(f"synthetic:{tmp_path / 'world'}").samples[:3]
    fake = SimpleNamespace(
        __version__="2.60.0",
        data=SimpleNamespace(from_items=_FakeDataset, ActorPoolStrategy=lambda size: None),
        is_initialized=lambda: True,
        cluster_resources=lambda: {"CPU": 4.0, "GPU": 2.0},
    )
    monkeypatch.setattr(ray_exec, "_import_ray", lambda: fake)
    spec = ray_exec.PrepareSpec.from_config(load_config(TOY_CI, {}))
    calls: list[int] = []

    class LostDevice:
        masks = SimpleNamespace(image_size=spec.sam_size, cfg=spec.amg, generate_prepared=None)
        classifier = SimpleNamespace(image_size=spec.clip_size, mean=(0.5,) * 3, std=(0.5,) * 3)
        work_long_side = spec.work_long_side

        def label_prepared(self, prepared: Any, clip: Any) -> Any:
            calls.append(len(prepared))
            raise RuntimeError("CUDA error: an illegal memory access was encountered\nCUDA kernel errors ...")

    out = tmp_path / "out"
    with pytest.raises(DeviceLostError, match="3 of 3 images left") as info:
        ray_exec.run_ray(samples, out, LostDevice, {"fingerprint": "x"}, spec, batch_size=2)
    assert calls == [2]  # the batch failed once; no image retried on the lost device, no later batch
    assert info.value.left == [s.id for s in samples] and "\n" not in str(info.value)
    status = json.loads((out / "shards" / "0-of-1.json").read_text())
    assert status["left"] == info.value.left and "illegal memory access" in status["stopped"]
    assert status["num_gpus_per_worker"] == 1.0  # auto, on a cluster that reports GPUs
    errors = [json.loads(x) for x in (out / "errors.jsonl").read_text().splitlines()]
    assert len(errors) == 1 and errors[0]["id"] == samples[0].id


def test_driver_manifest_records_the_run_mode_and_sam2_sizes_match_a_built_labeler(
    tmp_path: Path,
) -> None:
    """The Ray driver's manifest (no model) carries what build_labeler's does: the resolved precision /
    compile (run_mode, config) and the proposer record, with the same fingerprint; for a SAM 2 variant the
    prepare stage gets S from the config (Hiera is not built on the meta device) and SAM 2's resize."""
    pytest.importorskip("sam2", reason="SAM 2 needs the sam2 package ([sam2] extra)")
    from zsplg_fast.labeling.build import build_labeler, describe_labeling, resolve_run_config
    from zsplg_fast.labeling.ray_exec import PrepareSpec
    from zsplg_fast.models.sam import sam_input_size

    generate_dataset(tmp_path / "world", num=2, num_classes=3, seed=1, size=64)
    over = {"sam.variant": "sam2_tiny", "classify.classes": str(tmp_path / "world" / "classes.txt")}
    cfg = load_config(TOY_CI, {**over, "label.device": "cpu"})
    built = build_labeler(cfg)
    resolved, mode = resolve_run_config(cfg)
    got = describe_labeling(resolved, built.class_names, "on each ray actor", mode)
    for key in ("fingerprint", "weights", "proposer", "run_mode", "classes"):
        assert got[key] == built.manifest[key], key
    assert got["config"]["label"]["precision"] == "fp32" and got["config"]["label"]["compile"] == "off"
    assert sam_input_size("sam2_tiny") == 256
    spec = PrepareSpec.from_config(cfg)
    assert spec == PrepareSpec.of(built.labeler) and spec.family == "sam2"
