"""A real label folder for the review tests: 3 toy-world images labeled by the shipped toy SAM and CLIP."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from zsplg_fast.config import load_config
from zsplg_fast.data.synthetic import TOY_WORLD, _generate

CONFIG = Path(__file__).parents[2] / "zsplg_fast" / "configs" / "toy_ci.yaml"


@pytest.fixture(scope="session")
def toy_world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The toy world (the one the toy SAM and CLIP were trained on), small: 4 labeled, 3 unlabeled, 2 val."""
    data = tmp_path_factory.mktemp("review") / "world"
    _generate(data, TOY_WORLD, {"labeled": 4, "unlabeled": 3, "val": 2})  # make_toy_world's, fewer images
    return data


def _label_toy(world: Path, name: str, n: int, **extra: object) -> Path:
    """`label` on the first ``n`` unlabeled toy images into ``<world>/../<name>`` (toy SAM + CLIP, 8×8)."""
    from zsplg_fast.labeling.run import label_dataset

    torch.set_num_threads(1)
    split = world.parent / f"{name}.txt"
    split.write_text("".join((world / "splits" / "unlabeled.txt").read_text().splitlines(True)[:n]))
    out = world.parent / name
    over = {"data.source": f"synthetic:{world}", "data.split": str(split), "classify.classes": "auto"}
    over.update({"sam.variant": "toy", "clip.model": "toy", "label.out": str(out), "label.overlays": 0})
    over["amg.points_per_side"] = 8  # fewer prompts: still several masks per image, half the time
    label_dataset(load_config(CONFIG, {**over, **extra}))
    return out


@pytest.fixture(scope="session")
def toy_labels(toy_world: Path) -> Path:
    """`label` on 3 unlabeled toy images (meta with margins, RLEs, uncovered fraction)."""
    return _label_toy(toy_world, "zs", 3)


@pytest.fixture(scope="session")
def capped_labels(toy_world: Path) -> Path:
    """`label` on 2 unlabeled toy images (256 px) at a working long side of 96: masks, boxes and RLEs in
    meta are at 96 px, the label PNGs at 256 px."""
    return _label_toy(toy_world, "zs-capped", 2, **{"label.work_long_side": 96})


@pytest.fixture
def old_labels(toy_labels: Path, tmp_path: Path) -> Path:
    """A copy of ``toy_labels`` whose meta lacks the review fields (a folder labeled by an older version)."""
    out = tmp_path / "old"
    shutil.copytree(toy_labels, out)
    for p in (out / "meta").glob("*.json"):
        meta = json.loads(p.read_text())
        meta.pop("uncovered_fraction")
        for m in meta["masks"]:
            m.pop("rle")
            m.pop("margin")
        p.write_text(json.dumps(meta))
    return out
