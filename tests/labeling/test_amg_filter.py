"""The AMG filter: IoU head first, fused and sync-free per decoder batch, compilable, and still
upstream's decisions (colour SAM against segment-anything's SamAutomaticMaskGenerator)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from segment_anything import SamAutomaticMaskGenerator
from torch.utils._python_dispatch import TorchDispatchMode

from zsplg_fast.bench.synthetic_sam import build_colour_sam, sam_module_engines
from zsplg_fast.config.labeling import AmgConfig
from zsplg_fast.labeling.amg import MaskGenerator
from zsplg_fast.labeling.amg_filter import CropGeometry, FilterParams, filter_flags

torch.set_num_threads(1)


def _image(h: int, w: int, seed: int = 0) -> np.ndarray:
    """Flat-coloured discs on a coloured background, plus noise: (h, w, 3) uint8."""
    rng = np.random.default_rng(seed)
    img = np.zeros((h, w, 3), np.uint8) + rng.integers(0, 255, 3, dtype=np.uint8)
    yy, xx = np.mgrid[:h, :w]
    for _ in range(10):
        cy, cx, r = rng.integers(0, h), rng.integers(0, w), rng.integers(min(h, w) // 10, min(h, w) // 3)
        img[(yy - cy) ** 2 + (xx - cx) ** 2 < r * r] = rng.integers(0, 255, 3, dtype=np.uint8)
    return np.clip(img.astype(np.int16) + rng.integers(-12, 12, img.shape), 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def colour_sam():  # type: ignore[no-untyped-def]
    sam = build_colour_sam(256)
    return sam, *sam_module_engines(sam)


_CASES = {  # (thresholds, image seed)
    "default-thresholds": ({"pred_iou_thresh": 0.88, "stability_score_thresh": 0.95}, 1),
    "moderate": ({"pred_iou_thresh": 0.5, "stability_score_thresh": 0.8}, 2),
    "crops": ({"pred_iou_thresh": 0.0, "stability_score_thresh": 0.5, "crop_n_layers": 1}, 3),
}


@pytest.mark.parametrize("case", sorted(_CASES))
def test_sync_free_filter_keeps_upstreams_masks(colour_sam, case: str) -> None:  # type: ignore[no-untyped-def]
    """The fused per-batch filter + per-crop resolution (the CUDA path, forced here on the CPU) and the
    compacting CPU path give upstream's records: same boxes, areas, scores, order."""
    sam, enc, dec = colour_sam
    kw, seed = _CASES[case]
    img = _image(160, 200, seed=seed)
    n = 6 if kw.get("crop_n_layers") else 12
    ref = SamAutomaticMaskGenerator(sam, points_per_side=n, **kw).generate(img)
    cfg = AmgConfig(points_per_side=n, **kw)
    fused = MaskGenerator(enc, dec, cfg, prompt_batch=40, sync_free=True).generate(img)
    compacting = MaskGenerator(enc, dec, cfg, prompt_batch=40, sync_free=False).generate(img)
    assert len(ref) >= 5
    for ours in (fused, compacting):
        assert [o["bbox"] for o in ours] == [r["bbox"] for r in ref]
        assert [o["area"] for o in ours] == [r["area"] for r in ref]
        np.testing.assert_allclose(
            [o["stability_score"] for o in ours], [r["stability_score"] for r in ref], rtol=1e-6
        )
        for o, r in zip(ours, ref, strict=True):
            np.testing.assert_array_equal(o["segmentation"], r["segmentation"])


_DATA_DEPENDENT = {"nonzero", "_local_scalar_dense", "masked_select", "unique", "_unique2"}


class _SyncRecorder(TorchDispatchMode):
    """Records ops whose output size or value the host must wait for (a host sync on CUDA)."""

    def __init__(self, log: list[str]) -> None:
        super().__init__()
        self.log = log
        self.inside_engine = False

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        name = func._schema.name.split("::")[-1]
        bool_index = name == "index" and any(
            isinstance(t, torch.Tensor) and t.dtype == torch.bool
            for t in (args[1] if len(args) > 1 else [])
            if t is not None
        )
        if not self.inside_engine and (name in _DATA_DEPENDENT or bool_index):
            self.log.append(name)
        return func(*args, **(kwargs or {}))


class _MarkedDecoder:
    """Wraps the decoder engine: logs each call, and hides its own ops from the recorder."""

    def __init__(self, inner: Any, log: list[str]) -> None:
        self.inner, self.log, self.rec = inner, log, None
        self.inputs, self.outputs, self.device = inner.inputs, inner.outputs, inner.device

    def __call__(self, feeds: dict[str, Any]) -> dict[str, Any]:
        self.log.append("DECODER")
        self.rec.inside_engine = True
        try:
            return self.inner(feeds)
        finally:
            self.rec.inside_engine = False


def _syncs_between_decoder_calls(enc: Any, dec: Any, sync_free: bool) -> list[str]:
    log: list[str] = []
    marked = _MarkedDecoder(dec, log)
    cfg = AmgConfig(points_per_side=8, pred_iou_thresh=0.5, stability_score_thresh=0.8)
    gen = MaskGenerator(enc, marked, cfg, prompt_batch=16, sync_free=sync_free)
    img = _image(120, 160, seed=9)
    with _SyncRecorder(log) as rec:
        marked.rec = rec
        gen.generate_tensors(img)
    first, last = log.index("DECODER"), len(log) - 1 - log[::-1].index("DECODER")
    assert log.count("DECODER") == 4  # 64 prompts in batches of 16
    return [op for op in log[first:last] if op != "DECODER"]


def test_no_host_sync_inside_the_decoder_loop(colour_sam) -> None:  # type: ignore[no-untyped-def]
    """Sync-free mode: no data-dependent op (nonzero, boolean indexing, .item()/bool()) between the
    first and the last decoder call of a crop; the compacting CPU mode has several per batch."""
    _, enc, dec = colour_sam
    assert _syncs_between_decoder_calls(enc, dec, sync_free=True) == []
    assert len(_syncs_between_decoder_calls(enc, dec, sync_free=False)) >= 3


def _smooth(k: int, size: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    base = torch.nn.functional.interpolate(
        torch.randn(k, 1, 8, 8, generator=g), size=(size, size), mode="bicubic"
    )
    return base[:, 0] * 4 - torch.linspace(-4, 4, k)[:, None, None]


def test_fused_filter_compiles_without_graph_breaks_and_gives_identical_results() -> None:
    """fullgraph=True fails on any graph break (a host sync or data-dependent shape); the traced graph
    must give the eager answers bit for bit: fp32 logits through aot_eager, bf16 through eager."""
    geom = CropGeometry(input_hw=(192, 256), crop_hw=(150, 200), ratio=4, full_low=(64, 64))
    params = FilterParams(pred_iou=0.5, stability=0.8, offset=1.0)
    iou = torch.linspace(0.3, 1.0, 24)
    for dtype, backend in ((torch.float32, "eager"), (torch.bfloat16, "aot_eager")):
        torch._dynamo.reset()
        low = _smooth(24, 64, seed=1).to(dtype)
        eager = filter_flags(low, iou, geom, params, chunk=32)
        fn = torch.compile(filter_flags, backend=backend, fullgraph=True)
        compiled = fn(low, iou, geom, params, chunk=32)
        assert eager[1].any() and not eager[1].all()  # the thresholds cut somewhere inside
        for a, b in zip(eager, compiled, strict=True):
            assert torch.equal(a, b)
