"""Encoder/decoder overlap for AMG over several images: while image i is decoded and filtered on the
current CUDA stream, the encoder of the next crops runs on a second stream.

``Streams`` is the only device-specific part: on CUDA the encoder runs under ``torch.cuda.stream(side)``
and the current stream waits for it (``wait_stream``) before the embeddings are used, which are then
recorded on the current stream (``record_stream``, so the caching allocator does not reuse their memory
early). Elsewhere both are no-ops: the same order of calls runs sequentially, with the same results.
Decoding and resizing images stay in the job's worker threads (``amg_prepare.prepare_image``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from typing import Any

import torch


class Streams:
    """The encoder's stream: a second CUDA stream on ``device``, or none (CPU: sequential)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.side = torch.cuda.Stream(device=device) if device.type == "cuda" else None

    def encoder(self) -> contextlib.AbstractContextManager[Any]:
        """Context the encoder runs in."""
        return torch.cuda.stream(self.side) if self.side is not None else contextlib.nullcontext()

    def handoff(self, outputs: Sequence[Any]) -> None:
        """Make the encoder's ``outputs`` safe to use on the current stream."""
        if self.side is None:
            return
        main = torch.cuda.current_stream(self.device)
        main.wait_stream(self.side)
        for out in outputs:  # a crop's embedding, or its dict of feeds (SAM 2: embedding + high-res maps)
            for t in out.values() if isinstance(out, dict) else (out,):
                if isinstance(t, torch.Tensor) and t.is_cuda:
                    t.record_stream(main)


def pipelined(
    n_jobs: int,
    chunk: int,
    image_of: Sequence[int],
    encode: Callable[[range], list[Any]],
    finish: Callable[[int, list[Any]], Any],
    streams: Streams,
) -> list[Any]:
    """Encode jobs (crops) in chunks of ``chunk``, one chunk ahead on the encoder stream; finish each
    image as soon as all its jobs are encoded.

    Args:
        n_jobs: crops of all images, image by image (``image_of[j]``: the image of crop j, non-decreasing).
        encode: crop indices → their embeddings (called inside ``streams.encoder()``).
        finish: (image index, its embeddings in crop order) → that image's result (current stream).

    Returns the results in image order.
    """
    chunks = [range(s, min(s + chunk, n_jobs)) for s in range(0, n_jobs, chunk)]
    embs: list[Any] = [None] * n_jobs
    n_images = image_of[-1] + 1 if n_jobs else 0
    last = {i: j for j, i in enumerate(image_of)}  # last crop of each image
    results: list[Any] = []

    def launch(ci: int) -> list[Any]:
        if ci >= len(chunks):
            return []
        with streams.encoder():
            return encode(chunks[ci])

    ahead = launch(0)
    for ci, rng in enumerate(chunks):
        current = ahead
        streams.handoff(current)
        ahead = launch(ci + 1)  # runs on the encoder stream while this chunk's images are decoded
        for j, e in zip(rng, current, strict=True):
            embs[j] = e
        while len(results) < n_images and last[len(results)] <= rng[-1]:
            i = len(results)
            mine = [embs[j] for j in range(n_jobs) if image_of[j] == i]
            results.append(finish(i, mine))
            for j in range(n_jobs):  # drop finished embeddings early
                if image_of[j] == i:
                    embs[j] = None
    return results
