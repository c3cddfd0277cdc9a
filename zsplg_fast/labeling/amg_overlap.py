"""Encoder/decoder overlap: while image i is decoded and filtered on the current CUDA stream, the encoder
of the next crops (the next encoder batch, or the next image of the job) runs on a second stream.

``Streams`` is the only device-specific part. On CUDA, :meth:`Streams.launch` runs the encoder under
``torch.cuda.stream(side)`` after the side stream waited for the current one (its inputs and the
generator's constants were written there), and records an event on the side stream when the encoder's
work is queued. :meth:`Streams.handoff` makes the current stream wait for that event only (not for
encoders launched after it, so the next image keeps running), then records the embeddings on the
current stream (``record_stream``): the caching allocator does not hand their memory to the side stream
again before the current stream's last use of them. Elsewhere (CPUs) no stream exists: ``launch`` calls
the encoder at once, ``handoff`` returns its outputs, and the same order of calls gives the same results.
``overlap=True`` on a CPU keeps that early order (tests exercise the CUDA schedule with it).
Decoding and resizing images stay in the job's worker threads (``ZeroShotLabeler.prepare``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch


@dataclass
class Launched:
    """An encoder call queued by :meth:`Streams.launch`: its ``outputs`` (a list, one entry per crop: a
    tensor or a dict of tensors) and the CUDA event recorded after it on the side stream (None: done)."""

    outputs: list[Any]
    event: Any = None


@dataclass
class EncodedImage:
    """An image whose encoder was launched (``MaskGenerator.encode_ahead``): ``prepared`` (its crops,
    an ``amg_prepare.PreparedImage``), the queued encoder call (per crop the decoder's feeds) and the
    encoder stages' seconds."""

    prepared: Any
    launched: Launched
    timings: dict[str, float]


class Streams:
    """The encoder's stream on ``device``.

    Args:
        device: the generator's device.
        overlap: run encoders ahead of the decoder (the next image's encoder is launched before the
            current image is decoded); None = on CUDA only. On CUDA a second stream makes it concurrent;
            on a CPU it only changes the order of the (sequential) calls.
    """

    def __init__(self, device: torch.device, overlap: bool | None = None) -> None:
        self.device = device
        cuda = device.type == "cuda"
        self.overlaps = cuda if overlap is None else bool(overlap)
        self.side = torch.cuda.Stream(device=device) if cuda and self.overlaps else None

    def encoder(self) -> contextlib.AbstractContextManager[Any]:
        """Context the encoder runs in."""
        return torch.cuda.stream(self.side) if self.side is not None else contextlib.nullcontext()

    def launch(self, fn: Callable[..., list[Any]], *args: Any) -> Launched:
        """Queue ``fn(*args)`` (an encoder call) on the encoder stream; returns without waiting for it."""
        if self.side is not None:
            self.side.wait_stream(torch.cuda.current_stream(self.device))
        with self.encoder():
            outputs = fn(*args)
            event = None
            if self.side is not None:
                event = torch.cuda.Event()
                event.record(self.side)
        return Launched(outputs, event)

    def handoff(self, launched: Launched) -> list[Any]:
        """``launched``'s outputs, safe to use on the current stream (may be called more than once)."""
        if launched.event is None:
            return launched.outputs
        main = torch.cuda.current_stream(self.device)
        main.wait_event(launched.event)
        for out in launched.outputs:  # a crop's embedding, or its dict of feeds (SAM 2: + high-res maps)
            for t in out.values() if isinstance(out, dict) else (out,):
                if isinstance(t, torch.Tensor) and t.is_cuda:
                    t.record_stream(main)
        return launched.outputs


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
        encode: crop indices → their embeddings (launched with ``streams.launch``).
        finish: (image index, its embeddings in crop order) → that image's result (current stream).

    Returns the results in image order.
    """
    chunks = [range(s, min(s + chunk, n_jobs)) for s in range(0, n_jobs, chunk)]
    embs: list[Any] = [None] * n_jobs
    n_images = image_of[-1] + 1 if n_jobs else 0
    last = {i: j for j, i in enumerate(image_of)}  # last crop of each image
    results: list[Any] = []

    def launch(ci: int) -> Launched:
        return streams.launch(encode, chunks[ci]) if ci < len(chunks) else Launched([])

    ahead = launch(0)
    for ci, rng in enumerate(chunks):
        current = streams.handoff(ahead)
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
