"""enhance: the fusion rule on a real model, palette PNGs written atomically, resume, refusal."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from zsplg_fast.config.train import TrainConfig
from zsplg_fast.data.images import load_image
from zsplg_fast.data.labels import read_label, write_label
from zsplg_fast.data.sources import open_source
from zsplg_fast.errors import ConfigError, OutputExistsError
from zsplg_fast.models.segmenter import build_segmenter, load_checkpoint, save_checkpoint
from zsplg_fast.train.enhance import enhance, normalize_image
from zsplg_fast.train.evaluate import predict

NAMES = ["background", "circle", "square", "triangle"]


@pytest.fixture
def ckpt(tmp_path: Path) -> Path:
    torch.manual_seed(0)
    path = tmp_path / "u.pth"
    save_checkpoint(path, build_segmenter("tiny", 4), NAMES)
    return path


def test_unconfident_pixels_take_the_zero_shot_label(
    synth: Path, tiny_cfg: Callable[..., TrainConfig], ckpt: Path, tmp_path: Path
) -> None:
    gt_dir = synth / "SegmentationClass"  # stands in for zero-shot labels: then the fallback is exact
    cfg = tiny_cfg(**{"data.zero_shot": str(gt_dir), "enhance.threshold": 1.0})
    rep = enhance(cfg, ckpt, tmp_path / "enh")
    n = len(open_source(f"synthetic:{synth}", "unlabeled").samples)
    assert rep["written"] == n and rep["images_with_gt"] == n
    assert rep["miou_enhanced"] == pytest.approx(1.0) and rep["miou_zero_shot"] == pytest.approx(1.0)
    assert rep["changed_fraction"] == 0.0
    one = sorted((tmp_path / "enh" / "labels").glob("*.png"))[0]
    assert np.array_equal(read_label(one), read_label(gt_dir / one.name))


def test_confident_pixels_take_the_prediction_and_rerun_resumes(
    synth: Path, tiny_cfg: Callable[..., TrainConfig], ckpt: Path, tmp_path: Path
) -> None:
    out = tmp_path / "enh"
    cfg = tiny_cfg(**{"enhance.threshold": 0.0, "enhance.fallback": "prediction"})
    first = enhance(cfg, ckpt, out)
    sample = open_source(f"synthetic:{synth}", "unlabeled").samples[0]
    model, _ = load_checkpoint(ckpt)
    img = normalize_image(load_image(sample.image_path)).unsqueeze(0)
    want = predict(model, img)[0].argmax(0).numpy().astype(np.uint8)
    label_path = out / "labels" / f"{sample.id}.png"
    assert np.array_equal(read_label(label_path), want)
    # resume: a deleted file is rewritten, a torn one is replaced, stale temps are swept, the rest kept
    label_path.unlink()
    other = out / "labels" / f"{open_source(f'synthetic:{synth}', 'unlabeled').samples[1].id}.png"
    other.write_bytes(other.read_bytes()[:20])
    (out / "labels" / ".x.png.abc.tmp").write_bytes(b"junk")
    again = enhance(cfg, ckpt, out)
    assert again["written"] == 2 and again["kept"] == first["written"] - 2
    assert np.array_equal(read_label(label_path), want)
    assert not list(out.rglob("*.tmp"))
    with pytest.raises(OutputExistsError, match="another checkpoint or settings"):
        enhance(tiny_cfg(**{"enhance.threshold": 0.5, "enhance.fallback": "prediction"}), ckpt, out)


def test_background_scope_fills_only_zero_shot_background(
    synth: Path, tiny_cfg: Callable[..., TrainConfig], ckpt: Path, tmp_path: Path
) -> None:
    # zero-shot labels that keep only class 1 (the "labeler" missed every other object)
    zs_dir = tmp_path / "zs" / "labels"
    zs_dir.mkdir(parents=True)
    samples = open_source(f"synthetic:{synth}", "unlabeled").samples
    for s in samples:
        gt = read_label(synth / "SegmentationClass" / f"{s.id}.png")
        write_label(zs_dir / f"{s.id}.png", np.where(gt == 1, 1, 0).astype(np.uint8))
    cfg = tiny_cfg(
        **{"data.zero_shot": str(tmp_path / "zs"), "enhance.threshold": 0.0, "enhance.scope": "background"}
    )
    rep = enhance(cfg, ckpt, tmp_path / "enh")
    model, _ = load_checkpoint(ckpt)
    changed = pixels = 0
    for s in samples:
        zs = read_label(zs_dir / f"{s.id}.png")
        pred = predict(model, normalize_image(load_image(s.image_path)).unsqueeze(0))[0].argmax(0).numpy()
        want = np.where(zs == 0, pred, zs)  # named pixels (class 1) kept, background replaced
        got = read_label(tmp_path / "enh" / "labels" / f"{s.id}.png")
        assert np.array_equal(got, want)
        changed, pixels = changed + int((got != zs).sum()), pixels + zs.size
    assert changed > 0 and rep["changed_fraction"] == pytest.approx(changed / pixels)
    assert rep["scope"] == "background"


def test_zero_shot_fallback_needs_a_folder(
    tiny_cfg: Callable[..., TrainConfig], ckpt: Path, tmp_path: Path
) -> None:
    with pytest.raises(ConfigError, match=r"data\.zero_shot"):
        enhance(tiny_cfg(), ckpt, tmp_path / "e")
