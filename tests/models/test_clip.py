"""build_clip: local checkpoints round trip, wrappers, bad files and tags, non-ViT towers, bundle fields."""

from __future__ import annotations

import hashlib
import json
import logging
import warnings
from collections.abc import Callable
from pathlib import Path

import open_clip
import pytest
import torch

from zsplg_fast.errors import CheckpointError, ConfigError, OutputExistsError
from zsplg_fast.models import ClipBundle, build_clip, save_clip_checkpoint


def features(bundle: ClipBundle) -> tuple[torch.Tensor, torch.Tensor]:
    """(2, D) image features of fixed noise and (2, D) text features of two prompts."""
    images = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    tokens = bundle.tokenizer(["a photo of a cat.", "a photo of a circle."])
    with torch.no_grad():
        return bundle.model.encode_image(images), bundle.model.encode_text(tokens)


@pytest.fixture(scope="module")
def saved(tiny_clip: ClipBundle, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_clip_checkpoint(tiny_clip.model, tmp_path_factory.mktemp("clip") / "tiny_clip.pt")


def test_round_trip_identical_features(tiny_clip: ClipBundle, saved: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # weights given: no random-init warning
        loaded = build_clip("zsplg-test-vit", saved)
    ref_img, ref_txt = features(tiny_clip)
    img, txt = features(loaded)
    assert torch.equal(img, ref_img) and torch.equal(txt, ref_txt)
    assert loaded.weights == hashlib.sha256(saved.read_bytes()).hexdigest() and loaded.pretrained == str(
        saved
    )
    assert not loaded.model.training


def test_state_dict_wrapper_and_module_prefix(tiny_clip: ClipBundle, saved: Path, tmp_path: Path) -> None:
    sd = torch.load(saved, weights_only=True)
    wrapped = tmp_path / "epoch_3.pt"
    torch.save({"epoch": 3, "state_dict": {f"module.{k}": v for k, v in sd.items()}}, wrapped)
    loaded = build_clip("zsplg-test-vit", wrapped)
    assert torch.equal(features(loaded)[0], features(tiny_clip)[0])


def test_open_clip_builtin_name_with_local_file(
    tiny_clip: ClipBundle, saved: Path, tmp_path: Path, tiny_configs: dict[str, dict]
) -> None:
    """A name only open_clip knows (not registered here) loads through open_clip.create_model."""
    cfg = tmp_path / "zsplg-test-oc.json"
    cfg.write_text(json.dumps(tiny_configs["zsplg-test-vit"]))
    open_clip.add_model_config(cfg)
    loaded = build_clip("zsplg-test-oc", saved)
    assert torch.equal(features(loaded)[1], features(tiny_clip)[1])


def test_wrong_architecture_is_a_checkpoint_error(saved: Path, clip_config_dir: Path) -> None:
    with pytest.raises(CheckpointError, match="do not fit open_clip model 'zsplg-test-vit-custom'"):
        build_clip("zsplg-test-vit-custom", saved)


def test_missing_and_corrupt_files(tmp_path: Path, clip_config_dir: Path) -> None:
    with pytest.raises(CheckpointError, match="not found"):
        build_clip("ViT-B-32", str(tmp_path / "absent.pt"))
    with pytest.raises(CheckpointError, match="none is there"):
        build_clip("zsplg-test-vit", tmp_path / "absent.pt")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"\x00garbage" * 100)
    with pytest.raises(CheckpointError, match="cannot read CLIP weights"):
        build_clip("zsplg-test-vit", bad)


def test_tags_never_download(caplog: pytest.LogCaptureFixture) -> None:
    with pytest.raises(CheckpointError, match=r"not an open_clip tag for 'ViT-B-32'.*openai"):
        build_clip("ViT-B-32", "no_such_tag")
    with caplog.at_level(logging.CRITICAL), pytest.raises(CheckpointError, match="pass the local file"):
        build_clip("ViT-B-32", "openai")


def test_unknown_model_suggests() -> None:
    with pytest.raises(ConfigError, match="did you mean 'ViT-B-16'"):
        build_clip("ViT-B-61")


def test_non_vit_tower_refused(random_clip: Callable[[str], ClipBundle]) -> None:
    with pytest.raises(ConfigError, match=r"need an open_clip ViT image tower.*ModifiedResNet"):
        random_clip("zsplg-test-rn")


def test_random_init_warns_and_bundle_fields(clip_config_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING), pytest.warns(UserWarning, match="RANDOM"):
        bundle = build_clip("zsplg-test-vit")
    assert "NO pretrained weights" in caplog.text
    assert (bundle.image_size, bundle.patch_size, bundle.embed_dim) == (224, 32, 32)
    assert bundle.mean == pytest.approx(open_clip.OPENAI_DATASET_MEAN)
    assert bundle.std == pytest.approx(open_clip.OPENAI_DATASET_STD)
    assert (bundle.weights, bundle.pretrained, bundle.name) == ("random-init", None, "zsplg-test-vit")
    assert bundle.tokenizer(["a cat"]).shape == (1, 16)


def test_save_refuses_overwrite(tiny_clip: ClipBundle, saved: Path) -> None:
    with pytest.raises(OutputExistsError):
        save_clip_checkpoint(tiny_clip.model, saved)
