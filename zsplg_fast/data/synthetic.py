"""Synthetic "shapes" world: images of shapes on textured backgrounds, with exact masks.

Classes are defined by shape only; colour, size, rotation and background are drawn independently of
the class. Every mask is rasterised at the label resolution and the image pixels inside it are
exactly the pixels painted for that object (no anti-aliasing), so labels are exact ground truth.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from zsplg_fast.data.labels import write_label
from zsplg_fast.data.shapes import OBJECT_COLOURS, SHAPES, background, jitter, shading, shape_mask
from zsplg_fast.errors import ConfigError, OutputExistsError
from zsplg_fast.utils.io import atomic_path, atomic_write_json, atomic_write_text

WORLD_CLASSES: tuple[str, ...] = ("background", *SHAPES)
MAX_CLASSES = len(WORLD_CLASSES) - 1
_MIN_CONTRAST = 90.0  # min RGB distance between an object colour and the local background mean
_MIN_VISIBLE = 0.45  # min visible (in-frame, unoccluded) fraction of an object's painted area

SPLIT_CODES: dict[str, int] = {"labeled": 1, "unlabeled": 2, "val": 3}


@dataclass
class SynthSample:
    """One rendered image.

    Attributes:
        image: (H, W, 3) uint8 RGB.
        label: (H, W) uint8, 0 = background, 1..K = shape class (topmost object wins).
        instances: [(class_id, (H, W) bool visible mask)], in paint order (bottom first).
        colours: colour name of each instance (aligned with ``instances``).
        rgb: base RGB of each instance before shading and noise (aligned with ``instances``).
    """

    image: np.ndarray
    label: np.ndarray
    instances: list[tuple[int, np.ndarray]]
    colours: list[str] = field(default_factory=list)
    rgb: list[tuple[int, int, int]] = field(default_factory=list)


def render_sample(
    rng: np.random.Generator,
    size: tuple[int, int] = (256, 256),
    num_classes: int = 6,
    max_objects: int = 4,
    radius: tuple[float, float] = (18.0, 60.0),
) -> SynthSample:
    """Render one image of 1..``max_objects`` shapes with exact masks.

    Args:
        rng: numpy Generator; the output is a pure function of its state.
        size: (H, W) in pixels.
        num_classes: K, shapes ``WORLD_CLASSES[1..K]`` are used (1 <= K <= MAX_CLASSES).
        max_objects: at most this many objects (at least 1).
        radius: (min, max) radius in pixels at a 256 px short side; scaled with the short side.

    Returns:
        SynthSample with image (H, W, 3) uint8, label (H, W) uint8 in {0..K}, visible instance masks.
    """
    if not 1 <= num_classes <= MAX_CLASSES:
        raise ConfigError("synthetic.num_classes", num_classes, "out of range", valid=f"1..{MAX_CLASSES}")
    h, w = int(size[0]), int(size[1])
    if h < 32 or w < 32:
        raise ConfigError("synthetic.size", size, "image too small", valid=">= 32 px per side")
    scale = min(h, w) / 256.0
    bg = background(rng, (h, w))
    n_obj = int(rng.integers(1, max_objects + 1))
    colour_names = list(OBJECT_COLOURS)

    masks: list[np.ndarray] = []
    classes: list[int] = []
    names: list[str] = []
    rgbs: list[tuple[int, int, int]] = []
    canvas = bg.copy()
    for _ in range(n_obj):
        for _attempt in range(20):
            cls = int(rng.integers(1, num_classes + 1))
            r = float(rng.uniform(*radius)) * scale
            cx = float(rng.uniform(0.1 * w, 0.9 * w))
            cy = float(rng.uniform(0.1 * h, 0.9 * h))
            m = shape_mask(WORLD_CLASSES[cls], cx, cy, r, float(rng.uniform(0, 2 * math.pi)), (h, w))
            area = int(m.sum())
            if area < 40 * scale * scale:
                continue
            # every earlier object must keep enough of its visible area
            ok = all((mk & ~m).sum() >= _MIN_VISIBLE * mk.sum() for mk in masks)
            if not ok:
                continue
            local_bg = canvas[m].mean(0)
            for _c in range(12):
                cname = colour_names[int(rng.integers(len(colour_names)))]
                col = jitter(rng, OBJECT_COLOURS[cname], 18)
                if float(np.linalg.norm(col - local_bg)) >= _MIN_CONTRAST:
                    break
            shade = shading(rng, (h, w))
            canvas[m] = np.clip(col[None] + shade[m][:, None], 0, 255)
            masks = [mk & ~m for mk in masks] + [m]
            classes.append(cls)
            names.append(cname)
            rgbs.append((int(col[0]), int(col[1]), int(col[2])))
            break
    sigma = float(rng.uniform(2.0, 7.0))
    image = np.clip(canvas + rng.normal(0, sigma, canvas.shape), 0, 255).round().astype(np.uint8)
    label = np.zeros((h, w), np.uint8)
    for cls, mk in zip(classes, masks, strict=True):
        label[mk] = cls
    return SynthSample(image, label, list(zip(classes, masks, strict=True)), names, rgbs)


@dataclass(frozen=True)
class WorldSpec:
    """Fixed parameters of a synthetic world (the seed fixes every split's images)."""

    num_classes: int = 6
    size: int = 256
    size_max: int | None = None
    seed: int = 0
    max_objects: int = 4


TOY_WORLD = WorldSpec(num_classes=6, size=256, size_max=320, seed=20240607, max_objects=4)
# (labeled, unlabeled, val) image counts per scale of the toy world
TOY_SCALES: dict[str, tuple[int, int, int]] = {"demo": (20, 180, 60), "ci": (8, 40, 24)}

_LINE = "JPEGImages/{0}.jpg SegmentationClass/{0}.png"


def split_rng(seed: int, split: str, index: int) -> np.random.Generator:
    """The Generator of image ``index`` of ``split``; independent of the dataset's size."""
    return np.random.default_rng([seed, SPLIT_CODES[split], index])


def _image_size(rng: np.random.Generator, spec: WorldSpec) -> tuple[int, int]:
    if spec.size_max is None or spec.size_max <= spec.size:
        return spec.size, spec.size
    return int(rng.integers(spec.size, spec.size_max + 1)), int(rng.integers(spec.size, spec.size_max + 1))


def render_split_sample(spec: WorldSpec, split: str, index: int) -> SynthSample:
    """Render image ``index`` of ``split`` ('labeled' | 'unlabeled' | 'val') of world ``spec``."""
    rng = split_rng(spec.seed, split, index)
    return render_sample(rng, _image_size(rng, spec), spec.num_classes, spec.max_objects)


def _world_json(spec: WorldSpec, counts: dict[str, int]) -> dict[str, Any]:
    return {
        "generator": "zsplg_fast.data.synthetic",
        "version": 1,
        "classes": list(WORLD_CLASSES[: spec.num_classes + 1]),
        "num_classes": spec.num_classes,
        "size": spec.size,
        "size_max": spec.size_max,
        "seed": spec.seed,
        "max_objects": spec.max_objects,
        "counts": counts,
    }


def _check_out(out: Path, params: dict[str, Any]) -> None:
    """Refuse a non-empty folder unless it is a synthetic dataset made with the same parameters."""
    if not out.exists():
        return
    if not out.is_dir():
        raise OutputExistsError(out, "exists and is not a folder; choose another --out")
    if not any(out.iterdir()):
        return
    wj = out / "world.json"
    if not wj.is_file():
        raise OutputExistsError(out, "is not empty and is not a synthetic dataset; choose another --out")
    try:
        old = json.loads(wj.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise OutputExistsError(out, f"world.json is unreadable ({e}); choose another --out") from e
    old.pop("complete", None)
    if old != params:
        raise OutputExistsError(
            out, "holds a synthetic dataset made with other parameters; choose another --out"
        )


def generate_dataset(
    out: str | Path,
    num: int,
    num_classes: int = 6,
    seed: int = 0,
    size: int = 256,
    val_fraction: float = 0.2,
    labeled_fraction: float = 0.1,
    size_max: int | None = None,
    max_objects: int = 4,
) -> dict[str, Any]:
    """Write a VOC-layout synthetic dataset with UniMatch split files.

    Layout: ``JPEGImages/<id>.jpg`` (quality 95), ``SegmentationClass/<id>.png`` (palette PNG, values
    0..K), ``ImageSets/Segmentation/{train,val}.txt``, ``splits/{labeled,unlabeled,val}.txt``,
    ``classes.txt`` and ``world.json``. Ids are ``<split>_<index:05d>``; each image depends only on
    (seed, split, index), so a larger dataset extends a smaller one. Rerunning into a folder made with
    the same parameters resumes (existing files are kept); any other non-empty folder is refused.

    Returns:
        {"out", "num", "counts": {split: n}, "classes", "splits": {name: path}}.
    """
    if num < 1:
        raise ConfigError("synthetic.num", num, "need at least one image", valid=">= 1")
    if not 0.0 <= val_fraction < 1.0 or not 0.0 <= labeled_fraction <= 1.0:
        raise ConfigError("synthetic.fractions", (val_fraction, labeled_fraction), "out of range")
    n_val = min(num - 1, round(num * val_fraction)) if num > 1 else 0
    n_train = num - n_val
    n_lab = min(n_train, max(1, round(n_train * labeled_fraction))) if labeled_fraction > 0 else 0
    counts = {"labeled": n_lab, "unlabeled": n_train - n_lab, "val": n_val}
    return _generate(Path(out), WorldSpec(num_classes, size, size_max, seed, max_objects), counts)


def _generate(out: Path, spec: WorldSpec, counts: dict[str, int]) -> dict[str, Any]:
    if not 1 <= spec.num_classes <= MAX_CLASSES:
        raise ConfigError(
            "synthetic.num_classes", spec.num_classes, "out of range", valid=f"1..{MAX_CLASSES}"
        )
    params = _world_json(spec, counts)
    _check_out(out, params)
    atomic_write_json(out / "world.json", {**params, "complete": False})
    ids: dict[str, list[str]] = {}
    for split, n in counts.items():
        ids[split] = [f"{split}_{i:05d}" for i in range(n)]
        for i, sid in enumerate(ids[split]):
            img_p, lab_p = out / "JPEGImages" / f"{sid}.jpg", out / "SegmentationClass" / f"{sid}.png"
            if img_p.is_file() and lab_p.is_file():
                continue
            s = render_split_sample(spec, split, i)
            with atomic_path(img_p) as tmp:
                Image.fromarray(s.image).save(tmp, format="JPEG", quality=95)
            write_label(lab_p, s.label)
    lines = {k: "".join(_LINE.format(i) + "\n" for i in v) for k, v in ids.items()}
    for k, text in lines.items():
        atomic_write_text(out / "splits" / f"{k}.txt", text)
    train_ids = ids["labeled"] + ids["unlabeled"]
    atomic_write_text(out / "ImageSets/Segmentation/train.txt", "".join(i + "\n" for i in train_ids))
    atomic_write_text(out / "ImageSets/Segmentation/val.txt", "".join(i + "\n" for i in ids["val"]))
    classes = list(WORLD_CLASSES[: spec.num_classes + 1])
    atomic_write_text(out / "classes.txt", "".join(c + "\n" for c in classes))
    atomic_write_json(out / "world.json", {**params, "complete": True})
    return {
        "out": str(out),
        "num": sum(counts.values()),
        "counts": counts,
        "classes": classes,
        "splits": {k: str(out / "splits" / f"{k}.txt") for k in counts},
    }


def make_toy_world(out: str | Path, scale: str = "demo") -> dict[str, Any]:
    """Write the fixed toy world (``TOY_WORLD``) at ``scale`` 'demo' or 'ci' (see ``TOY_SCALES``)."""
    if scale not in TOY_SCALES:
        raise ConfigError("toy.scale", scale, "unknown scale", valid=", ".join(TOY_SCALES))
    n_lab, n_unl, n_val = TOY_SCALES[scale]
    return _generate(Path(out), TOY_WORLD, {"labeled": n_lab, "unlabeled": n_unl, "val": n_val})
