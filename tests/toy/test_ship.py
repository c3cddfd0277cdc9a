"""ship: fp16 weights + manifest entries for the kinds given, other entries and settings kept."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from zsplg_fast.toy import ship as ship_mod
from zsplg_fast.toy.report import DEFAULT_RECOMMENDED
from zsplg_fast.toy.train_backbone import BackboneTrainConfig, train_backbone
from zsplg_fast.utils.io import sha256_file


def test_ship_backbone_only_updates_its_entry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pkg = tmp_path / "pkg"
    monkeypatch.setattr(ship_mod, "PACKAGE_DIR", pkg)
    train_backbone(BackboneTrainConfig(steps=1, batch=2, image_size=64), tmp_path / "bb", "cmd")
    m = ship_mod.ship({"backbone": tmp_path / "bb"})
    entry = m["models"]["backbone"]
    assert entry["sha256"] == sha256_file(pkg / entry["file"]) and m["recommended"] == DEFAULT_RECOMMENDED
    sd = torch.load(pkg / entry["file"], weights_only=True)
    assert all(v.dtype == torch.float16 for v in sd.values() if v.is_floating_point())
    assert "metrics" not in m and "fp16_parity" not in m  # no SAM/CLIP given: nothing to evaluate
    mine = {"amg": {"points_per_side": 8}, "clip": {}}
    again = ship_mod.ship({"backbone": tmp_path / "bb"}, recommended=mine)
    assert again["recommended"] == mine and again["models"]["backbone"]["sha256"] == entry["sha256"]
    assert json.loads((pkg / ship_mod.MANIFEST_NAME).read_text()) == again
    with pytest.raises(ValueError, match="valid: sam, clip, backbone"):
        ship_mod.ship({"segmenter": tmp_path / "bb"})
