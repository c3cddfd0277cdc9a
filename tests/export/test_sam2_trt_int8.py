"""SAM 2 artifacts on the TensorRT and int8 paths that need no TensorRT: the optimisation profile built
from each ``sam2_*`` spec names every input (the two high-resolution feature maps included) with the
spec's fixed dimensions, the prompt decoder's batch follows ``export.decoder_max_batch`` (prompts and
m2m mask prompts alike); a (fake) TensorRT build of the exported artifacts sets exactly those shapes;
every SAM 2 kind has an int8 op list and an int8 calibration (or a one-line refusal)."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("sam2", reason="the [sam2] extra is not installed")

from zsplg_fast.config import load_config
from zsplg_fast.errors import ConfigError
from zsplg_fast.export import tensorrt as trt_build
from zsplg_fast.export.artifact import read_sidecar
from zsplg_fast.export.specs import family_specs, get_spec

from .test_export_trt_strong import fake_trt  # noqa: F401  (the fake TensorRT module fixture)

TOY_CI = Path(__file__).parents[2] / "zsplg_fast" / "configs" / "toy_ci.yaml"
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::FutureWarning")


@pytest.fixture(scope="module")
def tiny2(sam2_tiny_ckpt: Path) -> Any:
    from zsplg_fast.models import build_sam

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return build_sam("sam2_tiny", str(sam2_tiny_ckpt))


def _sidecar(name: str, model: Any) -> dict[str, Any]:
    """What ``export_onnx`` records for the spec (inputs, profiles), without exporting."""
    p = get_spec(name).bind(model)
    return {
        "spec": name,
        "inputs": [s.to_dict() for s in p.inputs],
        "profiles": {k: v.to_list() for k, v in p.profiles.items()},
    }


def _check(side: dict[str, Any], shapes: dict[str, tuple]) -> None:
    """Every input named; fixed dims as the spec's; min <= opt <= max on the dynamic ones."""
    assert set(shapes) == {d["name"] for d in side["inputs"]}, side["spec"]
    for d in side["inputs"]:
        lo, opt, hi = shapes[d["name"]]
        assert len(lo) == len(opt) == len(hi) == len(d["shape"]), d
        for k, dim in enumerate(d["shape"]):
            if isinstance(dim, int):
                assert lo[k] == opt[k] == hi[k] == dim, (d["name"], k)
            else:
                assert 1 <= lo[k] <= opt[k] <= hi[k], (d["name"], k)


def test_trt_profiles_of_every_sam2_spec_name_every_input(tiny2: Any) -> None:
    names = [s.name for s in family_specs("sam2")]
    assert names == ["sam2_encoder", "sam2_decoder", "sam2_decoder_batched"]
    g = tiny2.sam_image_embedding_size
    for name in names:
        side = _sidecar(name, tiny2)
        _, shapes = trt_build.build_profiles(side, None, decoder_max_batch=512)
        _check(side, shapes)
        if name != "sam2_encoder":  # the decoders take the encoder's three outputs, one image
            c0, c1 = (int(ch) for ch in (tiny2.sam_mask_decoder.conv_s0.out_channels,
                                         tiny2.sam_mask_decoder.conv_s1.out_channels))  # fmt: skip
            assert shapes["high_res_feats_0"][2] == (1, c0, 4 * g, 4 * g)
            assert shapes["high_res_feats_1"][2] == (1, c1, 2 * g, 2 * g)
            assert shapes["image_embed"][2][2:] == (g, g)
    batched = trt_build.build_profiles(_sidecar("sam2_decoder_batched", tiny2), None, 512)[1]
    # the prompt batch is the decoder_max_batch (opt = max, as SAM's); mask prompts on their own axis:
    # one ignored row in AMG's first pass (opt), one per prompt for m2m (max)
    assert batched["point_coords"] == ((1, 1, 2), (512, 1, 2), (512, 4, 2))
    assert batched["mask_input"] == ((1, 1, 4 * g, 4 * g), (1, 1, 4 * g, 4 * g), (512, 1, 4 * g, 4 * g))
    assert batched["has_mask_input"] == ((1,), (1,), (1,))
    enc = trt_build.build_profiles(_sidecar("sam2_encoder", tiny2), None, 512)[1]
    assert enc["image"][2][1:] == (3, tiny2.image_size, tiny2.image_size)  # not a prompt decoder: its own


def test_fake_tensorrt_build_of_the_exported_sam2_artifacts(
    fake_trt: dict[str, Any],  # noqa: F811
    sam2_toy_engines: Path,
    tmp_path: Path,
) -> None:
    """``zsplg-fast build`` on the exported sam2 ONNX (their real sidecars): the profile TensorRT gets names
    every input, and the plan's sidecar records it, so the labeler caps its prompt batch at its max."""
    for name in ("sam2_encoder", "sam2_decoder_batched"):
        onnx = sam2_toy_engines / f"{name}.onnx"
        side = read_sidecar(onnx)
        art, _ = trt_build.build_engine(
            onnx, tmp_path, precision="fp32", timing_cache=None, decoder_max_batch=96
        )
        shapes = fake_trt["config"].profiles[0].shapes
        _check(side, shapes)
        assert art.path.name == f"{name}.fp32.plan"
        assert {k: [list(s) for s in v] for k, v in shapes.items()} == art.sidecar["profiles"]
    assert art.sidecar["profiles"]["point_coords"][2][0] == 96  # the decoder's batch max
    assert "--profile batch=1:96:96" in art.sidecar["rebuild_command"]


def test_every_sam2_kind_has_an_int8_op_list_without_decoder_matmuls() -> None:
    from zsplg_fast.export.precision import INT8_OP_TYPES, int8_op_types

    for spec in family_specs("sam2"):
        assert spec.name in INT8_OP_TYPES, spec.name
    for name in ("sam2_decoder", "sam2_decoder_batched"):  # the two-way transformer's MatMuls stay float
        assert "MatMul" not in INT8_OP_TYPES[name] and int8_op_types(name, "cpu") == ("Conv", "Gemm")


def test_int8_calibration_feeds_of_the_sam2_artifacts(sam2_toy_engines: Path) -> None:
    """``build --precision int8 --calib``: the sam2 encoder and batched decoder get the feeds the labeler
    gives them (the AMG over the fp32 sam2 artifacts on onnxruntime); the single-prompt decoder, which
    the labeler never runs, is refused in one line."""
    from zsplg_fast.export.specs import SPECS
    from zsplg_fast.labeling.calibration import FEED_MAKERS, calibration_feeds

    without = {n for n in SPECS if n not in FEED_MAKERS}
    assert without == {"clip_text"}, without  # text: embedded once per class list, kept fp32
    cfg = load_config(TOY_CI, {"sam.variant": "sam2_tiny", "amg.points_per_side": 4})
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, (60, 88, 3), dtype=np.uint8), rng.integers(0, 255, (72, 56, 3), np.uint8)]
    enc = calibration_feeds(sam2_toy_engines / "sam2_encoder.onnx", images, cfg)
    s = read_sidecar(sam2_toy_engines / "sam2_encoder.onnx")["inputs"][0]["shape"][-1]
    assert len(enc) == 2 and all(f["image"].shape == (1, 3, s, s) for f in enc)
    dec = calibration_feeds(sam2_toy_engines / "sam2_decoder_batched.onnx", images, cfg, max_feeds=8)
    want = {d["name"] for d in read_sidecar(sam2_toy_engines / "sam2_decoder_batched.onnx")["inputs"]}
    assert dec and all(set(f) == want for f in dec)
    # the exported decoder shares its image side: one ignored mask row for the whole prompt batch
    assert all(f["mask_input"].shape[0] == 1 for f in dec)
    with pytest.raises(ConfigError, match="single-prompt decoder"):
        FEED_MAKERS["sam2_decoder"](sam2_toy_engines / "sam2_decoder.onnx", {}, images, cfg, 4)
