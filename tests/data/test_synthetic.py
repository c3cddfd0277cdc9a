"""Synthetic shapes world: determinism, exact masks, VOC layout, split files, refusal to overwrite."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from zsplg_fast.data.synthetic import (
    MAX_CLASSES,
    TOY_WORLD,
    WORLD_CLASSES,
    generate_dataset,
    make_toy_world,
    render_sample,
    render_split_sample,
)
from zsplg_fast.errors import ConfigError, OutputExistsError


def test_render_is_deterministic_and_seed_dependent() -> None:
    a = render_sample(np.random.default_rng(3), (200, 240), 6)
    b = render_sample(np.random.default_rng(3), (200, 240), 6)
    c = render_sample(np.random.default_rng(4), (200, 240), 6)
    assert np.array_equal(a.image, b.image) and np.array_equal(a.label, b.label)
    assert not np.array_equal(a.image, c.image)
    assert a.image.shape == (200, 240, 3) and a.image.dtype == np.uint8
    assert a.label.shape == (200, 240) and a.label.dtype == np.uint8


@pytest.mark.parametrize("k", [3, 6, MAX_CLASSES])
def test_label_values_and_instances_agree(k: int) -> None:
    for seed in range(12):
        s = render_sample(np.random.default_rng(seed), (256, 256), k)
        assert set(np.unique(s.label).tolist()) <= set(range(k + 1))
        assert 1 <= len(s.instances) <= 4
        rebuilt = np.zeros_like(s.label)
        for cls, m in s.instances:
            assert m.dtype == bool and m.any()
            assert not (rebuilt[m] > 0).any(), "visible masks must not overlap"
            rebuilt[m] = cls
        assert np.array_equal(rebuilt, s.label)


def test_masks_are_exactly_what_was_painted() -> None:
    """Pixels inside each visible mask have the object's colour (± shading and noise); outside, not."""
    for seed in range(10):
        s = render_sample(np.random.default_rng(seed), (256, 256), 6)
        img = s.image.astype(np.float32)
        for (_cls, m), rgb in zip(s.instances, s.rgb, strict=True):
            err = np.abs(img[m] - np.asarray(rgb, np.float32)).max(1)
            assert np.quantile(err, 0.99) < 45, "painted pixels must match the object's colour"
            # one-pixel ring just outside the mask: background or another object, not this colour
            ring = _dilate(m) & ~m & (s.label == 0)
            if ring.sum() > 20:
                d = np.linalg.norm(img[ring] - np.asarray(rgb, np.float32), axis=1)
                assert np.median(d) > 45, "the mask must not stop short of the painted object"


def _dilate(m: np.ndarray) -> np.ndarray:
    out = m.copy()
    out[1:] |= m[:-1]
    out[:-1] |= m[1:]
    out[:, 1:] |= m[:, :-1]
    out[:, :-1] |= m[:, 1:]
    return out


def test_colour_does_not_determine_class() -> None:
    seen: dict[int, set[str]] = {}
    for seed in range(120):
        s = render_sample(np.random.default_rng(seed), (128, 128), 6)
        for (cls, _m), name in zip(s.instances, s.colours, strict=True):
            seen.setdefault(cls, set()).add(name)
    assert set(seen) == set(range(1, 7))
    assert all(len(v) >= 5 for v in seen.values())


def test_bad_arguments_raise() -> None:
    with pytest.raises(ConfigError):
        render_sample(np.random.default_rng(0), (64, 64), MAX_CLASSES + 1)
    with pytest.raises(ConfigError):
        generate_dataset(Path("/nonexistent-never-written"), 0)


def _read_lines(p: Path) -> list[str]:
    return p.read_text().splitlines()


def test_generate_dataset_layout_and_determinism(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    info = generate_dataset(a, 10, num_classes=4, seed=5, size=96, size_max=120, labeled_fraction=0.25)
    generate_dataset(b, 10, num_classes=4, seed=5, size=96, size_max=120, labeled_fraction=0.25)
    assert info["counts"] == {"labeled": 2, "unlabeled": 6, "val": 2}
    assert _read_lines(a / "classes.txt") == list(WORLD_CLASSES[:5])
    lab, unl, val = (_read_lines(a / "splits" / f"{k}.txt") for k in ("labeled", "unlabeled", "val"))
    assert len(lab) == 2 and len(unl) == 6 and len(val) == 2
    assert not set(lab) & set(unl) and not set(val) & set(lab + unl)
    train = _read_lines(a / "ImageSets/Segmentation/train.txt")
    assert sorted(train) == sorted(line.split()[0][len("JPEGImages/") : -4] for line in lab + unl)
    for line in lab + unl + val:
        img_rel, lab_rel = line.split()
        img = Image.open(a / img_rel)
        png = Image.open(a / lab_rel)
        assert img.format == "JPEG" and png.mode == "P" and img.size == png.size
        assert 96 <= img.size[0] <= 120 and 96 <= img.size[1] <= 120
        assert set(np.unique(np.asarray(png)).tolist()) <= set(range(5))
        assert (a / img_rel).read_bytes() == (b / img_rel).read_bytes()
        assert (a / lab_rel).read_bytes() == (b / lab_rel).read_bytes()
    world = json.loads((a / "world.json").read_text())
    assert world["seed"] == 5 and world["complete"] is True
    assert not list(a.rglob("*.tmp"))


def test_label_png_matches_render(tmp_path: Path) -> None:
    generate_dataset(tmp_path / "d", 3, num_classes=6, seed=9, size=80, val_fraction=0.0)
    s = render_split_sample(
        type(TOY_WORLD)(num_classes=6, size=80, size_max=None, seed=9, max_objects=4), "labeled", 0
    )
    png = np.asarray(Image.open(tmp_path / "d/SegmentationClass/labeled_00000.png"))
    assert np.array_equal(png, s.label)


def test_refuses_foreign_or_different_folder(tmp_path: Path) -> None:
    user = tmp_path / "user"
    user.mkdir()
    (user / "precious.txt").write_text("mine")
    with pytest.raises(OutputExistsError):
        generate_dataset(user, 4, size=64)
    assert (user / "precious.txt").read_text() == "mine" and len(list(user.iterdir())) == 1

    ds = tmp_path / "ds"
    generate_dataset(ds, 4, size=64, seed=1)
    generate_dataset(ds, 4, size=64, seed=1)  # same parameters: allowed (resume)
    with pytest.raises(OutputExistsError):
        generate_dataset(ds, 4, size=64, seed=2)


def test_toy_world_ci_scale(tmp_path: Path) -> None:
    info = make_toy_world(tmp_path / "toy", scale="ci")
    assert info["classes"] == list(WORLD_CLASSES[: TOY_WORLD.num_classes + 1])
    assert info["counts"]["val"] > 0 and info["counts"]["labeled"] > 0
    with pytest.raises(ConfigError):
        make_toy_world(tmp_path / "x", scale="huge")
