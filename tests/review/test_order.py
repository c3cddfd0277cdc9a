"""Review order on a hand-made label folder with known margins, and the meta fields the labeler adds."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from zsplg_fast.data import write_label
from zsplg_fast.labeling.classify import Classification
from zsplg_fast.labeling.labeler import review_fields
from zsplg_fast.review.folder import LabelFolder
from zsplg_fast.review.order import class_shares, review_order


def _folder(tmp_path: Path, images: dict[str, tuple[list[float], float | None]]) -> Path:
    root = tmp_path / "labels"
    (root / "meta").mkdir(parents=True)
    (root / "manifest.json").write_text(json.dumps({"classes": ["background", "a", "b"]}))
    for sid, (margins, uncovered) in images.items():
        label = np.zeros((4, 5), np.uint8)
        label[:2] = 1
        label[3, 4] = 255
        write_label(root / "labels" / f"{sid}.png", label)
        meta = {"id": sid, "masks": [{"class": 1, "score": 0.9, "margin": m} for m in margins]}
        if uncovered is not None:
            meta["uncovered_fraction"] = uncovered
        (root / "meta" / f"{sid}.json").write_text(json.dumps(meta))
    return root


def test_need_ranks_low_margins_and_uncovered_first(tmp_path: Path) -> None:
    root = _folder(
        tmp_path,
        {
            "sure": ([0.9, 0.8], 0.1),
            "torn": ([0.9, 0.05], 0.1),
            "bare": ([0.9, 0.8], 0.9),
            "empty": ([], 0.0),
        },
    )
    order = review_order(LabelFolder(root))
    assert [s.id for s in order] == ["empty", "torn", "bare", "sure"]
    sure = next(s for s in order if s.id == "sure")
    assert sure.need == pytest.approx(0.5 * 0.15 + 0.25 * 0.2 + 0.25 * 0.1)
    assert sure.mean_margin == pytest.approx(0.85) and sure.min_margin == pytest.approx(0.8)
    assert sure.class_pixels == {0: 9, 1: 10, 255: 1} and sure.num_masks == 2
    shares = class_shares(order, 3)
    assert shares == pytest.approx({0: 0.45, 1: 0.5, 2: 0.0, 255: 0.05})


def test_older_meta_falls_back(tmp_path: Path) -> None:
    root = _folder(tmp_path, {"old": ([0.5], None)})
    meta_path = root / "meta" / "old.json"
    meta = json.loads(meta_path.read_text())
    meta["masks"][0].pop("margin")
    meta_path.write_text(json.dumps(meta))
    folder = LabelFolder(root)
    assert folder.missing_fields() == ["margin", "rle", "uncovered_fraction"]
    (s,) = review_order(folder)
    assert s.uncovered == pytest.approx(10 / 20) and s.mean_margin == pytest.approx(0.9)  # score instead


def test_labeler_review_fields() -> None:
    from pycocotools import mask as mask_utils

    masks = torch.zeros(2, 6, 8, dtype=torch.bool)
    masks[0, :3] = True
    masks[1, 2:4, :4] = True
    z = torch.zeros(2)
    cls = Classification(z.long(), z.long(), z, z, torch.tensor([0.25, 0.75]))
    got = review_fields(masks, cls)
    assert got["uncovered_fraction"] == pytest.approx(1 - 28 / 48)
    assert got["margins"] == [0.25, 0.75]
    for k, r in enumerate(got["rles"]):
        back = mask_utils.decode({"size": r["size"], "counts": r["counts"].encode()})
        np.testing.assert_array_equal(back.astype(bool), masks[k].numpy())
