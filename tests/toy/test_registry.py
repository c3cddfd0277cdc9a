"""Shipped toy weights: sha256-checked loading through the models layer's registries."""

from __future__ import annotations

import logging
import shutil
import warnings
from pathlib import Path

import pytest
import torch

from zsplg_fast.errors import CheckpointError
from zsplg_fast.toy.clip import toy_clip_config
from zsplg_fast.toy.registry import MANIFEST_NAME, PACKAGE_DIR, read_manifest, register, verified_weights


def test_manifest_records_provenance() -> None:
    man = read_manifest()
    for kind in ("sam", "clip", "backbone"):
        entry = man["models"][kind]
        assert len(entry["sha256"]) == 64
        assert entry["command"].startswith(("zsplg-fast toy train-", "python -m zsplg_fast.toy.train_"))
        assert entry["steps"] > 0 and entry["train_seconds"] > 0
        assert verified_weights(kind) == PACKAGE_DIR / entry["file"]
    total = sum(e["bytes"] for e in man["models"].values())
    assert total < 15 * 2**20
    assert {"amg", "clip"} <= set(man["recommended"])


def _copy_package(tmp: Path) -> Path:
    root = tmp / "toy"
    (root / "weights").mkdir(parents=True)
    shutil.copy(PACKAGE_DIR / MANIFEST_NAME, root / MANIFEST_NAME)
    for entry in read_manifest()["models"].values():
        shutil.copy(PACKAGE_DIR / entry["file"], root / entry["file"])
    return root


@pytest.mark.parametrize("kind", ["sam", "clip", "backbone"])
def test_corrupted_or_missing_weights_raise(tmp_path: Path, kind: str) -> None:
    root = _copy_package(tmp_path)
    assert verified_weights(kind, root).is_file()
    path = root / read_manifest(root)["models"][kind]["file"]
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="sha256"):
        verified_weights(kind, root)
    path.unlink()
    with pytest.raises(CheckpointError, match="missing"):
        verified_weights(kind, root)
    with pytest.raises(CheckpointError):
        verified_weights("nope", root)


def test_registered_models_load_shipped_weights_without_random_init_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from zsplg_fast.models.clip import build_clip
    from zsplg_fast.models.sam import build_sam, weights_fingerprint

    register()
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        sam = build_sam("toy")
        bundle = build_clip("toy")
    shipped = torch.load(verified_weights("sam"), map_location="cpu", weights_only=True)
    key = "mask_decoder.iou_prediction_head.layers.0.weight"
    assert torch.equal(sam.state_dict()[key], shipped[key].float())
    assert bundle.weights == weights_fingerprint(verified_weights("clip"))
    assert bundle.image_size == toy_clip_config()["vision_cfg"]["image_size"] and bundle.embed_dim == 128
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.text


def test_segmenter_backbone_toy_loads_the_shipped_sha256_checked_weights() -> None:
    import torch

    from zsplg_fast.models.segmenter import build_segmenter

    seg = build_segmenter("tiny", 7, pretrained="toy")
    shipped = torch.load(verified_weights("backbone"), map_location="cpu", weights_only=True)
    own = seg.backbone.state_dict()
    assert shipped and all(torch.equal(own[k], v.to(own[k].dtype)) for k, v in shipped.items())
    with pytest.raises(CheckpointError, match="file not found"):
        build_segmenter("tiny", 7, pretrained="no-such-weights")
