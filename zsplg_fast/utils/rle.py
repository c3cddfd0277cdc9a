"""COCO run-length encoding in torch, on the masks' own device (CUDA or CPU), byte-equal to pycocotools.

We followed pycocotools' ``maskApi.c`` (``rleEncode``: column-major runs starting with a run of 0s;
``rleToString``: each count, minus the count two before it from the fourth on, written as 5-bit groups
with a continuation bit, offset by 48) and wrote it as whole-tensor operations: every mask's run
boundaries come from one comparison and one ``nonzero``, the string characters from eight vectorised
shift rounds. Only the run counts and the characters cross to the host, once per call.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

_GROUPS = 8  # 5-bit groups per count: |x| < 2**35 fits (a count is at most H*W < 2**31)


def _runs(masks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(K, H, W) bool → counts (R,) int64 of all masks back to back, and runs per mask (K,) int64."""
    k, h, w = masks.shape
    n = h * w
    flat = masks.transpose(1, 2).reshape(k, n).to(torch.uint8)  # column-major, as COCO
    padded = F.pad(flat, (1, 0))  # a virtual 0 before the first pixel: the first run is of 0s
    change = padded[:, 1:] != padded[:, :-1]  # (K, N): a run starts at this pixel
    per_mask = change.sum(1) + 1  # boundaries + the end
    hit = change.nonzero()  # (E, 2) row-major: by mask, then position
    dev = masks.device
    mask_of = torch.cat([hit[:, 0], torch.arange(k, device=dev)])
    bound = torch.cat([hit[:, 1], torch.full((k,), n, dtype=torch.int64, device=dev)])
    order = torch.argsort(mask_of * (n + 1) + bound)
    mask_of, bound = mask_of[order], bound[order]
    first = torch.ones_like(mask_of, dtype=torch.bool)
    first[1:] = mask_of[1:] != mask_of[:-1]
    prev = torch.where(first, torch.zeros_like(bound), bound.roll(1))
    return bound - prev, per_mask


def _string_chars(counts: torch.Tensor, per_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Counts (R,) → the compressed characters of all masks back to back (uint8) and per mask (K,)."""
    start = torch.cumsum(per_mask, 0) - per_mask
    index = torch.arange(len(counts), device=counts.device) - torch.repeat_interleave(start, per_mask)
    two_before = torch.cat([counts.new_zeros(2), counts[:-2]])
    x = torch.where(index > 2, counts - two_before, counts)
    chars = torch.empty((len(x), _GROUPS), dtype=torch.int64, device=counts.device)
    emitted = torch.empty((len(x), _GROUPS), dtype=torch.bool, device=counts.device)
    active = torch.ones_like(x, dtype=torch.bool)
    for j in range(_GROUPS):
        c = x & 0x1F
        x = x >> 5  # arithmetic shift, as C's on a signed long
        more = torch.where((c & 0x10) != 0, x != -1, x != 0)
        chars[:, j] = (c | (more.long() << 5)) + 48
        emitted[:, j] = active
        active = active & more
    per_count = emitted.sum(1)
    per_mask_chars = torch.zeros_like(per_mask).index_add_(
        0, torch.repeat_interleave(torch.arange(len(per_mask), device=counts.device), per_mask), per_count
    )
    return chars[emitted].to(torch.uint8), per_mask_chars


def encode_uncompressed(masks: torch.Tensor) -> list[dict[str, Any]]:
    """(K, H, W) bool → K uncompressed RLEs ``{"size": [H, W], "counts": [int, ...]}`` (the format of
    segment-anything's ``mask_to_rle_pytorch`` and pycocotools' ``frPyObjects`` input)."""
    k, h, w = masks.shape
    if k == 0:
        return []
    counts, per_mask = _runs(masks.bool())
    flat, sizes = counts.cpu().tolist(), per_mask.cpu().tolist()
    out, i = [], 0
    for s in sizes:
        out.append({"size": [h, w], "counts": flat[i : i + s]})
        i += s
    return out


def encode(masks: torch.Tensor) -> list[dict[str, Any]]:
    """(K, H, W) bool tensor (any device) → K COCO compressed RLEs ``{"size": [H, W], "counts": str}``,
    byte-equal to ``pycocotools.mask.encode`` (whose ``counts`` are bytes; here decoded, JSON-ready)."""
    k, h, w = masks.shape
    if k == 0:
        return []
    counts, per_mask = _runs(masks.bool())
    chars, per_mask_chars = _string_chars(counts, per_mask)
    text = chars.cpu().numpy().tobytes().decode("ascii")
    out, i = [], 0
    for s in per_mask_chars.cpu().tolist():
        out.append({"size": [h, w], "counts": text[i : i + s]})
        i += s
    return out


def decode(rle: dict[str, Any]) -> torch.Tensor:
    """One COCO RLE (``counts`` as str/bytes, compressed, or a list of ints) → (H, W) bool tensor (CPU),
    as ``pycocotools.mask.decode``. The string is parsed vectorised (we followed ``rleFrString``: 5-bit
    groups, continuation bit 0x20, sign bit 0x10 of a group's last character, then each count from the
    fourth on plus the count two before it)."""
    import numpy as np

    h, w = (int(v) for v in rle["size"])
    counts = rle["counts"]
    if isinstance(counts, list):
        runs = np.asarray(counts, dtype=np.int64)
    else:
        raw = counts.encode("ascii") if isinstance(counts, str) else bytes(counts)
        c = np.frombuffer(raw, dtype=np.uint8).astype(np.int64) - 48
        last = (c & 0x20) == 0  # a count's last character
        group = np.concatenate([[0], np.cumsum(last)[:-1]])
        start = np.flatnonzero(np.concatenate([[True], last[:-1]]))
        k = np.arange(len(c)) - start[group]
        x = np.zeros(int(last.sum()), dtype=np.int64)
        np.add.at(x, group, (c & 0x1F) << (5 * k))
        neg = (c[last] & 0x10) != 0
        x[neg] |= -1 << (5 * (k[last][neg] + 1))
        runs = x.copy()  # runs[i] = x[i] + runs[i - 2] from i = 3: running sums of each parity
        runs[3::2] = np.cumsum(x[1::2])[1:] if len(x) > 3 else runs[3::2]
        runs[4::2] = np.cumsum(x[2::2])[1:] if len(x) > 4 else runs[4::2]
    values = np.arange(len(runs)) % 2 == 1  # runs alternate 0, 1, 0, ...
    flat = np.repeat(values, runs)
    return torch.from_numpy(flat.reshape(w, h).T.copy())  # column-major
