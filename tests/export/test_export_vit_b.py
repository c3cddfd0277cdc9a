"""vit_b-size SAM round trip (both decoders exported and validated; the encoder's real-size declaration):
the real-size shapes validate. The vit_b encoder's export parity (about 90 s on 2 cores) is measured by
bench/export_parity.py (bench/results/export_parity.md), as real-size models belong to benchmarks."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch

from zsplg_fast.export.onnx import export_onnx
from zsplg_fast.export.specs import get_spec


@pytest.mark.slow
def test_vit_b_sam_round_trip(tmp_path: Path) -> None:
    from zsplg_fast.models import build_sam

    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sam = build_sam("vit_b")
    enc = get_spec("sam_encoder").bind(sam)
    shapes = {"sam_encoder": {t.name: list(t.shape) for t in (*enc.inputs, *enc.outputs)}}
    for name in ("sam_decoder", "sam_decoder_batched"):
        art = export_onnx(get_spec(name).bind(sam), tmp_path)
        v = art.sidecar["validation"]
        assert v["passed"], v
        assert all(o["cosine"] > 0.99999 and o["max_abs"] < 1e-3 for o in v["outputs"]), v
        assert art.sidecar["external_data"] is None  # 375 MB: below the 2 GB protobuf limit
        shapes[name] = {d["name"]: d["shape"] for d in art.sidecar["inputs"] + art.sidecar["outputs"]}
    assert shapes["sam_encoder"]["image"] == ["batch", 3, 1024, 1024]
    assert shapes["sam_encoder"]["image_embeddings"] == ["batch", 256, 64, 64]
    assert shapes["sam_decoder_batched"]["low_res_masks"] == ["batch", 3, 256, 256]
    assert shapes["sam_decoder"]["mask_input"] == [1, 1, 256, 256]
