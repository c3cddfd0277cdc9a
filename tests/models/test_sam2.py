"""SAM 2 / 2.1 through the official ``sam2`` package: real configs, official checkpoint layout, bad files."""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import pytest
import torch

pytest.importorskip(
    "sam2",
    reason="the [sam2] extra is not installed "
    "(SAM2_BUILD_CUDA=0 pip install --no-build-isolation sam2==1.1.0)",
)

from zsplg_fast.errors import CheckpointError, MissingDependencyError
from zsplg_fast.models import build_sam, save_sam_checkpoint
from zsplg_fast.models.sam import sam_family
from zsplg_fast.models.sam2 import sam2_info


def _random(variant: str) -> torch.nn.Module:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return build_sam(variant)


@pytest.fixture(scope="module")
def hiera_t(tmp_path_factory: pytest.TempPathFactory) -> tuple[torch.nn.Module, Path]:
    """A random SAM 2.1 Hiera-T (the real config) saved as the official ``{"model": sd}`` .pt."""
    model = _random("sam2.1_hiera_t")
    return model, save_sam_checkpoint(model, tmp_path_factory.mktemp("sam2") / "sam2.1_hiera_tiny.pt")


def _save(sd: dict[str, torch.Tensor], path: Path) -> Path:
    torch.save({"model": sd}, path)
    return path


def test_official_layout_round_trip_through_sam2(hiera_t: tuple[torch.nn.Module, Path]) -> None:
    from sam2.build_sam import build_sam2

    model, path = hiera_t
    raw = torch.load(path, weights_only=True)
    assert set(raw) == {"model"} and set(raw["model"]) == set(model.state_dict())
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # weights given: no random-init warning
        loaded = build_sam("sam2.1_hiera_t", path)
    official = build_sam2("configs/sam2.1/sam2.1_hiera_t.yaml", ckpt_path=str(path), device="cpu")
    for key, value in model.state_dict().items():
        assert torch.equal(value, loaded.state_dict()[key]), key
        assert torch.equal(value, official.state_dict()[key]), key
    assert not loaded.training and sam_family("sam2.1_hiera_t") == "sam2"
    info = sam2_info(loaded)
    assert (info.img_size, info.embedding_size, info.hidden_dim) == (1024, 64, 256)
    assert info.high_res_channels == (32, 64) and info.dynamic_multimask_stability_thresh == 0.98


def _one_line(e: pytest.ExceptionInfo[CheckpointError], path: Path) -> str:
    msg = str(e.value)
    assert "\n" not in msg and str(path) in msg
    return msg


def test_sam2_checkpoint_for_a_sam_variant_is_named(hiera_t: tuple[torch.nn.Module, Path]) -> None:
    _, path = hiera_t
    with pytest.raises(CheckpointError) as e:
        build_sam("vit_b", path)
    msg = _one_line(e, path)
    assert "SAM 2.1 Hiera (trunk width 96, 12 blocks) = 'sam2.1_hiera_t'" in msg
    assert "'vit_b' was asked" in msg and "--sam sam2.1_hiera_t" in msg


def test_sam_checkpoint_for_a_sam2_variant_is_named(tmp_path: Path) -> None:
    tiny = _random("tiny")
    path = save_sam_checkpoint(tiny, tmp_path / "sam_tiny.pth")
    with pytest.raises(CheckpointError) as e:
        build_sam("sam2.1_hiera_t", path)
    msg = _one_line(e, path)
    assert "looks like SAM 'tiny' (segment-anything), but variant 'sam2.1_hiera_t' was asked" in msg


def test_other_generation_and_size_are_named(hiera_t: tuple[torch.nn.Module, Path], tmp_path: Path) -> None:
    model, _ = hiera_t
    sd = model.state_dict()
    # a SAM 2.0 file: no spatial no-object embedding, no object-pointer time projection
    old = {k: v for k, v in sd.items() if k != "no_obj_embed_spatial" and not k.startswith("obj_ptr_tpos")}
    path = _save(old, tmp_path / "sam2_hiera_tiny.pt")
    with pytest.raises(CheckpointError) as e:
        build_sam("sam2.1_hiera_t", path)
    assert "SAM 2 Hiera (trunk width 96, 12 blocks) = 'sam2_hiera_t'" in _one_line(e, path)
    with pytest.raises(CheckpointError) as e:
        build_sam("sam2.1_hiera_l", _save(dict(sd), tmp_path / "t_as_l.pt"))
    assert "= 'sam2.1_hiera_t', but variant 'sam2.1_hiera_l' was asked; pass --sam sam2.1_hiera_t" in str(
        e.value
    )


def test_missing_keys_are_counted(hiera_t: tuple[torch.nn.Module, Path], tmp_path: Path) -> None:
    model, _ = hiera_t
    sd = {k: v for k, v in model.state_dict().items() if not k.startswith("sam_mask_decoder.iou_token")}
    path = _save(sd, tmp_path / "cut.pt")
    with pytest.raises(CheckpointError) as e:
        build_sam("sam2.1_hiera_t", path)
    msg = _one_line(e, path)
    assert "(1 missing keys, e.g. sam_mask_decoder.iou_token.weight)" in msg and "--sam" not in msg


def test_missing_sam2_package_is_one_typed_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "sam2", None)
    with pytest.raises(MissingDependencyError, match=r"sam2.*SAM2_BUILD_CUDA=0"):
        build_sam("sam2_tiny")


def test_presets_bring_sam2_amg_defaults() -> None:
    from zsplg_fast.config import load_config
    from zsplg_fast.labeling.build import _amg_fingerprinted

    sam2 = load_config(None, {"sam.variant": "sam2.1_hiera_l"})
    assert sam2.amg.pred_iou_thresh == 0.8 and sam2.amg.use_m2m is False and sam2.amg.multimask_output
    sam1 = load_config(None, {})
    assert sam1.amg.pred_iou_thresh == 0.88
    # folders labelled before the SAM 2 keys existed keep their fingerprint
    assert "use_m2m" not in _amg_fingerprinted(sam1)
    m2m = load_config(None, {"sam.variant": "sam2_tiny", "amg.use_m2m": True})
    assert _amg_fingerprinted(m2m)["use_m2m"] is True
