"""COCO RLE in torch: byte-equal to pycocotools on random and edge-case masks, compressed and not."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pycocotools import mask as mask_utils

from zsplg_fast.labeling.amg_output import uncompressed_rle
from zsplg_fast.utils.rle import encode, encode_uncompressed


def _reference(masks: np.ndarray) -> list[dict]:
    """pycocotools.mask.encode on (K, H, W) bool: (H, W, K) Fortran-ordered uint8."""
    return mask_utils.encode(np.asfortranarray(masks.transpose(1, 2, 0).astype(np.uint8)))


def _cases() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    one_pixel = np.zeros((3, 7, 5), bool)
    one_pixel[0, 0, 0] = one_pixel[1, 6, 4] = one_pixel[2, 3, 2] = True
    blobs = np.zeros((4, 61, 83), bool)
    yy, xx = np.mgrid[:61, :83]
    for i in range(4):
        cy, cx, r = rng.integers(0, 61), rng.integers(0, 83), rng.integers(3, 40)
        blobs[i] = (yy - cy) ** 2 + (xx - cx) ** 2 < r * r
    return {
        "random-dense": rng.random((5, 37, 29)) < 0.5,  # many short runs, negative deltas
        "random-sparse": rng.random((4, 64, 48)) < 0.02,
        "empty": np.zeros((2, 9, 11), bool),
        "full": np.ones((2, 9, 11), bool),
        "one-pixel": one_pixel,
        "odd-1x1": rng.random((3, 1, 1)) < 0.5,
        "odd-row": rng.random((2, 1, 17)) < 0.5,
        "odd-column": rng.random((2, 13, 1)) < 0.5,
        "blobs": blobs,  # long runs: counts over 2**10 need several 5-bit groups
        "large-runs": np.pad(np.ones((1, 700, 900), bool), ((0, 0), (0, 1), (0, 0))),
    }


@pytest.mark.parametrize("case", sorted(_cases()))
def test_compressed_rle_is_byte_equal_to_pycocotools(case: str) -> None:
    masks = _cases()[case]
    ref = _reference(masks)
    ours = encode(torch.from_numpy(masks))
    assert len(ours) == len(ref) == len(masks)
    for o, r, m in zip(ours, ref, masks, strict=True):
        assert o["size"] == [int(v) for v in r["size"]]
        assert o["counts"].encode("ascii") == r["counts"]  # the compressed string, byte for byte
        np.testing.assert_array_equal(mask_utils.decode({**o, "counts": o["counts"].encode()}), m)


@pytest.mark.parametrize("case", ["random-dense", "empty", "full", "one-pixel", "odd-row"])
def test_uncompressed_rle_equals_the_numpy_encoder_and_pycocotools(case: str) -> None:
    masks = _cases()[case]
    ours = encode_uncompressed(torch.from_numpy(masks))
    assert ours == uncompressed_rle(masks)
    h, w = masks.shape[1:]
    for o, r in zip(ours, _reference(masks), strict=True):  # pycocotools compresses the same runs
        assert mask_utils.frPyObjects(o, h, w)["counts"] == r["counts"]


def test_no_masks_and_non_contiguous_input() -> None:
    assert encode(torch.zeros((0, 5, 5), dtype=torch.bool)) == []
    assert encode_uncompressed(torch.zeros((0, 5, 5), dtype=torch.bool)) == []
    base = torch.from_numpy(np.random.default_rng(1).random((3, 20, 30)) < 0.3)
    view = base.transpose(1, 2)  # (3, 30, 20), not contiguous
    ref = _reference(view.numpy().copy())
    assert [o["counts"].encode() for o in encode(view)] == [r["counts"] for r in ref]


def test_review_fields_rles_and_coverage_match_pycocotools() -> None:
    """The labeler's meta RLEs (always written; read by the review exports) come from the torch encoder."""
    from types import SimpleNamespace

    from zsplg_fast.labeling.labeler import review_fields

    masks = _cases()["blobs"]
    out = review_fields(torch.from_numpy(masks), SimpleNamespace(margin=None))
    ref = _reference(masks)
    assert [r["counts"].encode() for r in out["rles"]] == [r["counts"] for r in ref]
    covered = float(mask_utils.area(mask_utils.merge(list(ref), intersect=False)))
    assert out["uncovered_fraction"] == round(1.0 - covered / masks[0].size, 6)


@pytest.mark.parametrize("case", ["random-dense", "empty", "full", "one-pixel", "blobs", "odd-column"])
def test_decode_inverts_encode_like_pycocotools(case: str) -> None:
    from zsplg_fast.utils.rle import decode

    masks = _cases()[case]
    for rle, m, ref in zip(encode(torch.from_numpy(masks)), masks, _reference(masks), strict=True):
        np.testing.assert_array_equal(decode(rle).numpy(), m)
        np.testing.assert_array_equal(decode(ref).numpy(), mask_utils.decode(ref).astype(bool))
