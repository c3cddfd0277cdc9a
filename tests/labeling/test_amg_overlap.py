"""Encoder/decoder overlap: the next crops are encoded on the encoder stream before the current image
is decoded, their embeddings are handed off before use, and the masks equal one-image-at-a-time runs."""

from __future__ import annotations

import contextlib
from typing import Any

import numpy as np
import pytest
import torch

from zsplg_fast.bench.synthetic_sam import build_colour_sam, sam_module_engines
from zsplg_fast.config.labeling import AmgConfig
from zsplg_fast.labeling.amg import MaskGenerator
from zsplg_fast.labeling.amg_overlap import Launched, Streams, pipelined

torch.set_num_threads(1)


class _Logged:
    """An engine that logs its calls (and whether it ran inside the encoder stream)."""

    def __init__(self, inner: Any, name: str, log: list[str], state: dict[str, bool]) -> None:
        self.inner, self.name, self.log, self.state = inner, name, log, state
        self.inputs, self.outputs, self.device = inner.inputs, inner.outputs, inner.device

    def __call__(self, feeds: dict[str, Any]) -> dict[str, Any]:
        where = "side" if self.state["side"] else "main"
        self.log.append(f"{self.name}@{where}")
        return self.inner(feeds)


class _FakeStreams(Streams):
    """A CUDA-like encoder stream on the CPU: records entering it and each handoff."""

    def __init__(self, log: list[str], state: dict[str, bool]) -> None:
        super().__init__(torch.device("cpu"), overlap=True)
        self.log, self.state = log, state

    def encoder(self) -> contextlib.AbstractContextManager[Any]:
        @contextlib.contextmanager
        def ctx() -> Any:
            self.state["side"] = True
            try:
                yield
            finally:
                self.state["side"] = False

        return ctx()

    def handoff(self, launched: Launched) -> list[Any]:
        self.log.append(f"handoff{len(launched.outputs)}")
        return super().handoff(launched)


def _image(h: int, w: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    img = np.zeros((h, w, 3), np.uint8) + rng.integers(0, 255, 3, dtype=np.uint8)
    yy, xx = np.mgrid[:h, :w]
    for _ in range(6):
        cy, cx, r = rng.integers(0, h), rng.integers(0, w), rng.integers(8, 40)
        img[(yy - cy) ** 2 + (xx - cx) ** 2 < r * r] = rng.integers(0, 255, 3, dtype=np.uint8)
    return img


def test_next_image_is_encoded_on_the_side_stream_while_this_one_decodes() -> None:
    sam = build_colour_sam(256)
    enc, dec = sam_module_engines(sam)
    log: list[str] = []
    state = {"side": False}
    cfg = AmgConfig(points_per_side=4, pred_iou_thresh=0.0, stability_score_thresh=0.5)
    gen = MaskGenerator(
        _Logged(enc, "enc", log, state), _Logged(dec, "dec", log, state), cfg, encoder_batch=1, prompt_batch=8
    )
    gen.streams = _FakeStreams(log, state)
    images = [_image(100, 140, s) for s in range(3)]
    together = gen.generate_batch(images)
    # 3 images, 1 crop each, 1 crop per encoder call, 16 prompts in 2 decoder calls per image
    assert log == [
        "enc@side",  # image 0
        "handoff1",
        "enc@side",  # image 1 is encoded before image 0 is decoded (on CUDA: concurrently)
        "dec@main",
        "dec@main",
        "handoff1",
        "enc@side",  # image 2
        "dec@main",
        "dec@main",
        "handoff1",
        "dec@main",
        "dec@main",
    ]
    alone = MaskGenerator(enc, dec, cfg, prompt_batch=8)
    for img, res in zip(images, together, strict=True):
        ref = alone.generate_tensors(img)
        assert len(ref) > 0 and torch.equal(ref.masks, res.masks) and torch.equal(ref.boxes, res.boxes)


def test_pipelined_finishes_images_as_their_crops_arrive() -> None:
    """Crops of uneven images in chunks of 2: each image is finished right after its last chunk."""
    log: list[str] = []
    image_of = [0, 0, 0, 1, 2, 2]
    streams = Streams(torch.device("cpu"))  # the CPU path: no side stream, same order
    assert streams.side is None

    def encode(rng: range) -> list[str]:
        log.append(f"enc{list(rng)}")
        return [f"e{j}" for j in rng]

    def finish(i: int, embs: list[str]) -> str:
        log.append(f"img{i}")
        return f"{i}:{','.join(embs)}"

    out = pipelined(6, 2, image_of, encode, finish, streams)
    assert out == ["0:e0,e1,e2", "1:e3", "2:e4,e5"]
    assert log == ["enc[0, 1]", "enc[2, 3]", "enc[4, 5]", "img0", "img1", "img2"]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA: the real second stream")
def test_side_stream_on_cuda_gives_the_sequential_masks() -> None:
    sam = build_colour_sam(256).cuda()
    enc, dec = sam_module_engines(sam, device="cuda")
    cfg = AmgConfig(points_per_side=4, pred_iou_thresh=0.0, stability_score_thresh=0.5)
    gen = MaskGenerator(enc, dec, cfg, encoder_batch=1)
    assert gen.streams.side is not None
    images = [_image(100, 140, s) for s in range(3)]
    together = gen.generate_batch(images)
    for img, res in zip(images, together, strict=True):
        assert torch.equal(gen.generate_tensors(img).masks, res.masks)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA: the real second stream")
def test_encode_ahead_on_cuda_gives_the_sequential_masks() -> None:
    """The job's schedule on a real side stream: image i+1 encoded ahead, image i finished after."""
    sam = build_colour_sam(256).cuda()
    enc, dec = sam_module_engines(sam, device="cuda")
    cfg = AmgConfig(points_per_side=4, pred_iou_thresh=0.0, stability_score_thresh=0.5)
    gen = MaskGenerator(enc, dec, cfg)
    assert gen.overlap and gen.streams.side is not None
    images = [_image(100, 140, s) for s in range(3)]
    ref = [MaskGenerator(enc, dec, cfg, overlap=False).generate_tensors(im) for im in images]
    pending = gen.encode_ahead(gen.prepare(images[0]))
    got = []
    for im in images[1:]:
        ahead = gen.encode_ahead(gen.prepare(im))
        got.append(gen.finish_encoded(pending))
        pending = ahead
    got.append(gen.finish_encoded(pending))
    for r, g in zip(ref, got, strict=True):
        assert torch.equal(r.masks, g.masks) and torch.equal(r.boxes, g.boxes)
