"""bench_labeling end to end on tiny models (A vs B): report, fidelity, files written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from zsplg_fast.bench.labeling import LabelBenchConfig, bench_image, bench_labeling
from zsplg_fast.errors import ConfigError
from zsplg_fast.labeling.amg_ops import default_prompt_batch


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_bench_labeling_tiny_a_vs_b(tmp_path: Path) -> None:
    out = tmp_path / "labeling"
    cfg = LabelBenchConfig(
        grids=(4,),
        images=1,
        image_hw=(96, 128),
        sam_variant="tiny",
        clip_model="ViT-S-32",
        clip_size=64,
        variants=("A", "B"),
        threads=1,
        out=str(out),
        colour_fidelity=True,
        toy_images=0,  # trained-weights fidelity: tests/bench/test_labeling_toy.py
    )
    report = bench_labeling(cfg, log=lambda _m: None)
    b = report["results"]["4x4"]["B"]
    assert b["fidelity"]["mean_best_iou"] >= 0.98 and b["fidelity"]["count_ratio"] == 1.0
    assert b["fidelity"]["clip_feature_cosine_min"] > 0.9999
    assert {"encoder", "decoder", "clip", "pool"} <= set(b["stages_s"])
    a = report["results"]["4x4"]["A"]
    assert b["speedup_vs_A"] == pytest.approx(a["seconds_per_image"] / b["seconds_per_image"], abs=0.01)
    assert all(r["mean_best_iou"] >= 0.98 for r in report["colour_sam_fidelity"])
    assert json.loads(out.with_suffix(".json").read_text())["settings"]["torch_threads"] == 1
    md = out.with_suffix(".md").read_text()
    # tiny SAM: 16×16×128 embeddings → the CPU default (cache-sized) is 128 prompts per call
    assert b["prompt_batch"] == default_prompt_batch(torch.device("cpu"), (16, 16), 128) == 128
    assert f"| 4x4 | B ({b['prompt_batch']} prompts/call) |" in md and "colour SAM" in md


def test_bench_config_errors_and_images() -> None:
    with pytest.raises(ConfigError, match="variants"):
        bench_labeling(LabelBenchConfig(variants=("B",), out=None), log=lambda _m: None)
    a, b = bench_image(40, 60, seed=1), bench_image(40, 60, seed=1)
    assert a.shape == (40, 60, 3) and a.dtype.name == "uint8" and (a == b).all()


@pytest.mark.filterwarnings("ignore::UserWarning", "ignore::FutureWarning")
def test_bench_labeling_sam2_upstream_and_ours(tmp_path: Path) -> None:
    """SAM 2 variants: sam2's SAM2AutomaticMaskGenerator + dense CLIP (A) and ours on torch (B); the colour
    SAM 2 gives upstream's masks exactly. (C, ORT, runs the same code on exported artifacts: its CLIP
    export alone takes ~40 s here; SAM 2 on ORT is tested in test_amg_sam2 and test_label_sam2.)"""
    pytest.importorskip("sam2", reason="the [sam2] extra is not installed")
    cfg = LabelBenchConfig(
        grids=(4,),
        images=1,
        image_hw=(96, 128),
        sam_variant="sam2_tiny",
        clip_model="ViT-S-32",
        clip_size=64,
        variants=("A", "B"),
        threads=1,
        out=str(tmp_path / "labeling_sam2"),
        toy_images=0,
        isolate=False,
    )
    report = bench_labeling(cfg, log=lambda _m: None)
    for v in ("B",):
        fid = report["results"]["4x4"][v]["fidelity"]
        assert fid["mean_best_iou"] >= 0.98 and fid["count_ratio"] == 1.0, (v, fid)
    colour = report["colour_sam_fidelity"]
    assert all(r["identical_masks"] for r in colour), colour
    assert sum(r["masks_upstream"] for r in colour if r["pred_iou_thresh"] > 0) >= 20
    assert "SAM2AutomaticMaskGenerator" in report["variants"]["A"]


def test_bench_ort_engines_keep_the_arena_for_decoders_only(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Variant C's sessions: encoder / CLIP without the CPU arena (memory), decoders with it (speed)."""
    from zsplg_fast.bench import labeling_pipelines as lp

    made = []

    class Fake:
        def __init__(self, path, intra_op_threads=None, session_options=None):  # type: ignore[no-untyped-def]
            made.append((path.name, session_options["enable_cpu_mem_arena"]))

    monkeypatch.setattr("zsplg_fast.engines.ort.OrtEngine", Fake)
    names = ("sam_encoder", "sam_decoder_shared", "clip_dense", "sam_decoder_image")
    lp.ort_engines({n: tmp_path / f"{n}.onnx" for n in names})
    assert dict(made) == {
        "sam_encoder.onnx": False,
        "sam_decoder_shared.onnx": True,
        "clip_dense.onnx": False,
        "sam_decoder_image.onnx": True,
    }


@pytest.mark.filterwarnings("ignore::UserWarning", "ignore::FutureWarning")
def test_bench_labeling_sam2_ours_on_onnxruntime(tmp_path: Path) -> None:
    """SAM 2's variant C: ours on the exported sam2_encoder / sam2_decoder_batched (and a tiny CLIP's
    clip_dense) in onnxruntime, against sam2's SAM2AutomaticMaskGenerator + dense CLIP (A) on the same
    image: the same masks (fidelity), its own export step, its own row in the table."""
    pytest.importorskip("sam2", reason="the [sam2] extra is not installed")
    from zsplg_fast.models import open_clip_config_builder, register_clip_model

    clip = "tiny-clip-bench-gem"  # 6 blocks: the bench's dense CLIP runs GEM at its default depth 6
    vision = {"image_size": 64, "layers": 6, "width": 32, "patch_size": 16, "head_width": 16}
    text = {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}
    cfg_json = {"embed_dim": 32, "vision_cfg": vision, "text_cfg": text}
    (tmp_path / f"{clip}.json").write_text(json.dumps(cfg_json))
    register_clip_model(clip, open_clip_config_builder(tmp_path / f"{clip}.json"))
    out = tmp_path / "labeling_sam2_ort"
    cfg = LabelBenchConfig(
        grids=(4,),
        images=1,
        image_hw=(96, 128),
        sam_variant="sam2_tiny",
        clip_model=clip,
        clip_size=64,
        variants=("A", "C"),
        threads=1,
        out=str(out),
        colour_fidelity=False,  # the colour SAM 2's exactness: test_bench_labeling_sam2_upstream_and_ours
        toy_images=0,
        isolate=False,
        exporter="legacy",
        export_dir=str(tmp_path / "export"),
    )
    report = bench_labeling(cfg, log=lambda _m: None)
    c = report["results"]["4x4"]["C"]
    assert c["fidelity"]["mean_best_iou"] >= 0.98 and c["fidelity"]["count_ratio"] == 1.0, c["fidelity"]
    assert c["fidelity"]["clip_feature_cosine_min"] > 0.999
    assert report["export_s"] is not None
    exported = {p.name for p in (tmp_path / "export").glob("*.onnx")}
    assert {"sam2_encoder.onnx", "sam2_decoder_batched.onnx", "clip_dense.onnx"} <= exported, exported
    assert "SAM2AutomaticMaskGenerator" in report["variants"]["A"]
    assert "| 4x4 | C" in out.with_suffix(".md").read_text()


def test_upstream_warm_up_runs_encoder_and_clip_untimed() -> None:
    from zsplg_fast.bench.labeling import WARM_UP_CALLS
    from zsplg_fast.bench.labeling_pipelines import UpstreamPipeline, build_models

    models = build_models("tiny", "ViT-S-32", 64)
    pipe = UpstreamPipeline(models, {"points_per_side": 4})
    calls = {"encoder": 0, "clip": 0}
    hooks = [
        models.sam.image_encoder.register_forward_hook(
            lambda *a: calls.__setitem__("encoder", calls["encoder"] + 1)
        ),
        models.dense.register_forward_hook(lambda *a: calls.__setitem__("clip", calls["clip"] + 1)),
    ]
    try:
        pipe.warm_up(bench_image(64, 80, seed=1), calls=WARM_UP_CALLS)
    finally:
        for h in hooks:
            h.remove()
    assert WARM_UP_CALLS >= 2 and calls == {"encoder": WARM_UP_CALLS, "clip": WARM_UP_CALLS}
    assert pipe.stages == {}  # nothing of the warm-up is timed
