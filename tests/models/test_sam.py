"""SAM builders, official-style checkpoints, variant detection, tiny SAM under upstream predictors."""

from __future__ import annotations

import hashlib
import logging
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from segment_anything import SamAutomaticMaskGenerator, SamPredictor
from segment_anything.modeling import Sam

from zsplg_fast.errors import CheckpointError, ConfigError, OutputExistsError
from zsplg_fast.models import (
    SAM_BUILDERS,
    build_sam,
    identify_sam_variant,
    register_sam_variant,
    resolve_sam_checkpoint,
    sam_info,
    save_sam_checkpoint,
    weights_fingerprint,
)
from zsplg_fast.models.sam import SAM_DEFAULT_CHECKPOINTS, build_sam_tiny


def random_sam(variant: str, seed: int = 0) -> Sam:
    torch.manual_seed(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return build_sam(variant)


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory: pytest.TempPathFactory) -> tuple[Sam, Path]:
    model = random_sam("tiny", seed=1)
    return model, save_sam_checkpoint(model, tmp_path_factory.mktemp("sam") / "sam_tiny.pth")


def encoder_roundtrip(variant: str, path: Path, model: Sam) -> None:
    """Load ``path`` through build_sam and compare encoder outputs on one input with ``model``'s."""
    loaded = build_sam(variant, path)
    size = sam_info(model).img_size
    x = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref, out = model.image_encoder(x), loaded.image_encoder(x)
    assert not loaded.training
    assert torch.equal(ref, out)
    for key, value in model.state_dict().items():
        assert torch.equal(value, loaded.state_dict()[key]), key


def test_tiny_checkpoint_round_trip(tiny_ckpt: tuple[Sam, Path]) -> None:
    model, path = tiny_ckpt
    sd = torch.load(path, weights_only=True)
    assert "image_encoder.patch_embed.proj.weight" in sd  # official key layout, plain dict
    assert set(sd) == set(model.state_dict())
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # loading weights must not warn about random init
        encoder_roundtrip("tiny", path, model)


@pytest.mark.slow
def test_vit_b_checkpoint_round_trip(tmp_path: Path) -> None:
    model = random_sam("vit_b", seed=2)
    path = save_sam_checkpoint(model, tmp_path / "sam_vit_b.pth")
    torch.set_num_threads(2)
    encoder_roundtrip("vit_b", path, model)


@pytest.mark.parametrize("wrap", ["model", "state_dict", "module"])
def test_wrapped_checkpoints_load(tiny_ckpt: tuple[Sam, Path], tmp_path: Path, wrap: str) -> None:
    model, path = tiny_ckpt
    sd = torch.load(path, weights_only=True)
    obj = {f"module.{k}": v for k, v in sd.items()} if wrap == "module" else {wrap: sd, "epoch": 3}
    wrapped = tmp_path / "wrapped.pth"
    torch.save(obj, wrapped)
    loaded = build_sam("tiny", wrapped)
    assert torch.equal(loaded.image_encoder.pos_embed, model.image_encoder.pos_embed)


def test_wrong_variant_names_both(tiny_ckpt: tuple[Sam, Path]) -> None:
    _, path = tiny_ckpt
    with pytest.raises(CheckpointError, match=r"looks like SAM 'tiny'.*'vit_b' was asked.*--sam tiny"):
        build_sam("vit_b", path)


def test_unknown_layout_is_described(tiny_ckpt: tuple[Sam, Path], tmp_path: Path) -> None:
    _, path = tiny_ckpt
    sd = torch.load(path, weights_only=True)
    sd = {k: v for k, v in sd.items() if not k.startswith("image_encoder.blocks.3.")}  # depth 3, not 4
    cut = tmp_path / "cut.pth"
    torch.save(sd, cut)
    with pytest.raises(CheckpointError, match=r"width 128, depth 3, grid 16×16.*'tiny' was asked"):
        build_sam("tiny", cut)


def test_identify_real_variants_from_shapes() -> None:
    for name in ("vit_h", "vit_l", "vit_b", "tiny"):
        with torch.device("meta"):
            sd = SAM_BUILDERS[name]().state_dict()
        assert identify_sam_variant(sd) == name


def test_missing_and_corrupt_files(tiny_ckpt: tuple[Sam, Path], tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="not found"):
        build_sam("tiny", tmp_path / "absent.pth")
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"this is not a checkpoint" * 10)
    with pytest.raises(CheckpointError, match="cannot read"):
        build_sam("tiny", garbage)
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(tiny_ckpt[1].read_bytes()[:5000])
    with pytest.raises(CheckpointError, match="cannot read"):
        build_sam("tiny", truncated)
    not_sd = tmp_path / "list.pth"
    torch.save([1, 2, 3], not_sd)
    with pytest.raises(CheckpointError, match="not a SAM state_dict"):
        build_sam("tiny", not_sd)


def test_random_init_warns_loudly(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING), pytest.warns(UserWarning, match="RANDOM"):
        model = build_sam("tiny")
    assert "NO checkpoint" in caplog.text
    assert not model.training


def test_unknown_variant_suggests() -> None:
    with pytest.raises(ConfigError, match="did you mean 'vit_b'"):
        build_sam("vit_bb")


def test_registered_default_checkpoint(tiny_ckpt: tuple[Sam, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    model, path = tiny_ckpt
    monkeypatch.setattr("zsplg_fast.models.sam.SAM_BUILDERS", dict(SAM_BUILDERS))
    monkeypatch.setattr("zsplg_fast.models.sam.SAM_DEFAULT_CHECKPOINTS", dict(SAM_DEFAULT_CHECKPOINTS))
    register_sam_variant("shipped", build_sam_tiny, default_checkpoint=lambda: path)
    assert resolve_sam_checkpoint("shipped") == path
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loaded = build_sam("shipped")
    assert torch.equal(loaded.mask_decoder.iou_token.weight, model.mask_decoder.iou_token.weight)


def test_tiny_runs_under_upstream_predictor_and_amg() -> None:
    model = random_sam("tiny", seed=3)
    assert 1_500_000 < sum(p.numel() for p in model.parameters()) < 2_000_000
    image = np.random.default_rng(0).integers(0, 256, (96, 128, 3), dtype=np.uint8)
    predictor = SamPredictor(model)
    predictor.set_image(image)
    assert predictor.features.shape == (1, 128, 16, 16)
    masks, scores, low = predictor.predict(np.array([[40.0, 30.0]]), np.array([1]), multimask_output=True)
    assert masks.shape == (3, 96, 128) and masks.dtype == bool
    assert scores.shape == (3,) and low.shape == (3, 64, 64)
    amg = SamAutomaticMaskGenerator(
        model, points_per_side=4, pred_iou_thresh=-10.0, stability_score_thresh=0.0, box_nms_thresh=1.0
    )
    records = amg.generate(image)
    assert records, "thresholds at their minimum keep the random model's masks"
    assert all(r["segmentation"].shape == (96, 128) for r in records)


def test_sam_info_tiny() -> None:
    info = sam_info(build_sam_tiny())
    assert (info.img_size, info.patch_size, info.embedding_size) == (256, 16, 16)
    assert (info.embed_dim, info.prompt_embed_dim, info.depth) == (128, 128, 4)
    assert info.pixel_mean == (123.675, 116.28, 103.53)
    assert info.pixel_std == (58.395, 57.12, 57.375)


def test_fingerprint_and_no_overwrite(tiny_ckpt: tuple[Sam, Path]) -> None:
    model, path = tiny_ckpt
    assert weights_fingerprint(None) == "random-init"
    assert weights_fingerprint(path) == hashlib.sha256(path.read_bytes()).hexdigest()
    with pytest.raises(OutputExistsError):
        save_sam_checkpoint(model, path)
    assert not list(path.parent.glob(".*.tmp"))
    with pytest.raises(CheckpointError):
        weights_fingerprint(path.parent / "absent.pth")
