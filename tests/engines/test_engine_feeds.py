"""check_feeds: every refusal names the input, what was expected and what was got."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from zsplg_fast.engines.base import check_feeds, load_engine
from zsplg_fast.errors import FeedError
from zsplg_fast.export.tensors import TensorSpec

SPECS = [
    TensorSpec("image_embeddings", "float32", (1, 4, 2, 2)),
    TensorSpec("point_coords", "float32", ("batch", "num_points", 2), allow_float64=True),
    TensorSpec("point_labels", "float32", ("batch", "num_points")),
]


def _feeds(**over: Any) -> dict[str, Any]:
    f = {
        "image_embeddings": np.zeros((1, 4, 2, 2), np.float32),
        "point_coords": np.zeros((3, 2, 2), np.float32),
        "point_labels": np.zeros((3, 2), np.float32),
    }
    f.update(over)
    return {k: v for k, v in f.items() if v is not None}


def test_valid_feeds_pass_and_float64_is_cast_only_where_allowed() -> None:
    out = check_feeds(SPECS, _feeds(point_coords=np.zeros((3, 2, 2))))
    assert out["point_coords"].dtype == np.float32
    t = check_feeds(SPECS, _feeds(point_coords=torch.zeros(3, 2, 2, dtype=torch.float64)))
    assert t["point_coords"].dtype == torch.float32
    with pytest.raises(FeedError) as err:
        check_feeds(SPECS, _feeds(point_labels=np.zeros((3, 2))))
    assert err.value.name == "point_labels" and "float64 is not cast" in str(err.value)


@pytest.mark.parametrize(
    ("over", "name", "words"),
    [
        ({"point_labels": None}, "point_labels", "missing"),
        ({"extra": np.zeros(1)}, "extra", "unknown input"),
        ({"image_embeddings": np.zeros((1, 4, 2, 2), np.int64)}, "image_embeddings", "dtype int64"),
        ({"point_coords": np.zeros((3, 2), np.float32)}, "point_coords", "rank 3"),
        ({"image_embeddings": np.zeros((1, 4, 3, 2), np.float32)}, "image_embeddings", "size 2 on axis 2"),
        ({"point_labels": np.zeros((4, 2), np.float32)}, "point_labels", "axis 'batch' = 3"),
        ({"point_labels": np.zeros((3, 1), np.float32)}, "point_labels", "axis 'num_points' = 2"),
    ],
)
def test_feed_errors(over: dict[str, Any], name: str, words: str) -> None:
    with pytest.raises(FeedError) as err:
        check_feeds(SPECS, _feeds(**over))
    assert err.value.name == name and words in str(err.value)


def test_engines_check_feeds_before_running(decoder_onnx: Any, decoder_feeds: dict[str, Any]) -> None:
    for backend in ("ort", "torch"):
        engine = load_engine(decoder_onnx, backend=backend)
        bad = dict(decoder_feeds, point_labels=decoder_feeds["point_labels"].astype(np.int64))
        with pytest.raises(FeedError, match="point_labels"):
            engine(bad)
        ok = engine(dict(decoder_feeds, point_coords=decoder_feeds["point_coords"].astype(np.float64)))
        assert ok["low_res_masks"].shape == (5, 3, 64, 64)
