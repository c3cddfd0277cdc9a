"""The exported decoders upscale masks with MatMuls on token rows (export/specs/upscaling.py): the same
numbers as upstream's ConvTranspose2d → LayerNorm2d → GELU modules (SAM and SAM 2, random weights), and
no ConvTranspose left in the exported graphs."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from zsplg_fast.export.onnx import export_onnx
from zsplg_fast.export.specs import get_spec
from zsplg_fast.export.specs.sam_decoder_shared import SHARED_NAMES, SamDecoderImage
from zsplg_fast.export.specs.upscaling import deconv_as_matmul, masks_from_rows, upscale_rows

pytestmark = pytest.mark.filterwarnings(
    "ignore::UserWarning", "ignore::DeprecationWarning", "ignore::FutureWarning"
)


def _randomise(module: nn.Module, seed: int) -> None:
    """Every parameter random (LayerNorm affine and biases too: defaults of 1 / 0 would hide mistakes)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.5)


def _upstream_masks(upscaling: nn.Sequential, grid: torch.Tensor, hyper: torch.Tensor, high_res: Any) -> Any:
    """upstream predict_masks' upscaling + hypernetwork product on an NCHW grid (B, C, h, w)."""
    if high_res is None:
        up = upscaling(grid)
    else:  # sam2 MaskDecoder.predict_masks with use_high_res_features
        dc1, ln1, act1, dc2, act2 = upscaling
        up = act2(dc2(act1(ln1(dc1(grid) + high_res[1]))) + high_res[0])
    b, c, hh, ww = up.shape
    return (hyper @ up.reshape(b, c, hh * ww)).reshape(b, -1, hh, ww)


def _sam_upscaling() -> nn.Sequential:
    from segment_anything.modeling.mask_decoder import MaskDecoder
    from segment_anything.modeling.transformer import TwoWayTransformer

    t = TwoWayTransformer(depth=1, embedding_dim=64, mlp_dim=32, num_heads=2)
    return MaskDecoder(transformer_dim=64, transformer=t).output_upscaling


def _sam2_upscaling() -> nn.Sequential:
    pytest.importorskip("sam2", reason="the [sam2] extra is not installed")
    from sam2.modeling.sam.mask_decoder import MaskDecoder
    from sam2.modeling.sam.transformer import TwoWayTransformer

    t = TwoWayTransformer(depth=1, embedding_dim=64, mlp_dim=32, num_heads=2)
    return MaskDecoder(transformer_dim=64, transformer=t, use_high_res_features=True).output_upscaling


@pytest.mark.parametrize("family", ["sam", "sam2"])
@torch.inference_mode()
def test_token_upscaling_equals_the_modules_conv_transpose(family: str) -> None:
    upscaling = {"sam": _sam_upscaling, "sam2": _sam2_upscaling}[family]()
    assert isinstance(upscaling[0], nn.ConvTranspose2d) and isinstance(upscaling[3], nn.ConvTranspose2d)
    _randomise(upscaling, seed=1)
    gen = torch.Generator().manual_seed(2)
    b, c, h, w = 3, 64, 5, 7  # not square: rows and columns must not be swapped
    grid = torch.randn(b, c, h, w, generator=gen)
    hyper = torch.randn(b, 4, c // 8, generator=gen)
    high_res = None
    if family == "sam2":  # feat_s0 (1, C/8, 4h, 4w), feat_s1 (1, C/4, 2h, 2w), broadcast over prompts
        high_res = (
            torch.randn(1, c // 8, 4 * h, 4 * w, generator=gen),
            torch.randn(1, c // 4, 2 * h, 2 * w, generator=gen),
        )
    ref = _upstream_masks(upscaling, grid, hyper, high_res)
    rows = upscale_rows(upscaling, grid.flatten(2).transpose(1, 2), high_res)
    assert rows.shape == (b, 16 * h * w, c // 8)
    ours = masks_from_rows(hyper, rows, h, w)
    assert ours.shape == ref.shape == (b, 4, 4 * h, 4 * w)
    scale = float(ref.abs().max())
    assert scale > 1.0
    assert float((ours - ref).abs().max()) <= 1e-5 * scale


def test_only_kernel_2_stride_2_transposed_convolutions_are_rewritten() -> None:
    weight, bias = deconv_as_matmul(nn.ConvTranspose2d(8, 4, 2, stride=2))
    assert weight.shape == (8, 16) and bias.shape == (16,)
    for bad in (nn.ConvTranspose2d(8, 4, 3, stride=2), nn.ConvTranspose2d(8, 4, 2, stride=2, padding=1)):
        with pytest.raises(ValueError, match="k=2, s=2"):
            deconv_as_matmul(bad)


def _ops(path: str) -> set[str]:
    import onnx

    return {n.op_type for n in onnx.load(path, load_external_data=False).graph.node}


@pytest.mark.parametrize("name", ["sam_decoder_shared", "sam_decoder_batched"])
def test_exported_sam_decoders_have_no_conv_transpose_and_equal_upstream(
    tiny_sam: Any, tmp_path: Path, name: str
) -> None:
    from zsplg_fast.engines.base import load_engine

    art = export_onnx(get_spec(name).bind(tiny_sam), tmp_path)
    assert art.sidecar["validation"]["passed"] and art.sidecar["spec_options"]["token_upscaling"] is True
    ops = _ops(art.path)
    assert "ConvTranspose" not in ops and "LayerNormalization" in ops and "Pow" not in ops
    old = export_onnx(get_spec(name).bind(tiny_sam, token_upscaling=False), tmp_path / "upstream")
    assert "ConvTranspose" in _ops(old.path), "upstream's modules export a ConvTranspose"
    # the ONNX against segment-anything's own PromptEncoder + MaskDecoder (not our module)
    gen = torch.Generator().manual_seed(5)
    g, c = tiny_sam.prompt_encoder.image_embedding_size[0], tiny_sam.prompt_encoder.embed_dim
    emb = torch.randn(1, c, g, g, generator=gen)
    coords = torch.rand(6, 1, 2, generator=gen) * tiny_sam.image_encoder.img_size
    labels = torch.ones(6, 1)
    with torch.inference_mode():
        sparse, dense = tiny_sam.prompt_encoder(points=(coords, labels), boxes=None, masks=None)
        pe = tiny_sam.prompt_encoder.get_dense_pe()
        ref_masks, ref_iou = tiny_sam.mask_decoder(emb, pe, sparse, dense, multimask_output=True)
        feeds: dict[str, Any] = {"image_embeddings": emb.numpy()}
        if name == "sam_decoder_shared":
            shared = SamDecoderImage(tiny_sam)(emb)
            feeds = {n: t.numpy() for n, t in zip(SHARED_NAMES, shared, strict=True)}
    out = load_engine(art.path)({**feeds, "point_coords": coords.numpy(), "point_labels": labels.numpy()})
    np.testing.assert_allclose(out["low_res_masks"], ref_masks.numpy(), atol=1e-4)
    np.testing.assert_allclose(out["iou_predictions"], ref_iou.numpy(), atol=1e-4)


@pytest.fixture(scope="module")
def sam2_tiny() -> Any:
    pytest.importorskip("sam2", reason="the [sam2] extra is not installed")
    from zsplg_fast.models import build_sam

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.manual_seed(4)
        model = build_sam("sam2_tiny")
    _randomise(model.sam_mask_decoder.output_upscaling, seed=6)  # non-trivial LayerNorm affine
    return model


@pytest.mark.parametrize("name", ["sam2_decoder_batched", "sam2_decoder"])
def test_exported_sam2_decoders_have_no_conv_transpose_and_equal_upstream(
    sam2_tiny: Any, tmp_path: Path, name: str
) -> None:
    from zsplg_fast.engines.base import load_engine

    p = get_spec(name).bind(sam2_tiny)
    art = export_onnx(p, tmp_path, exporter="legacy")
    assert art.sidecar["validation"]["passed"] and art.sidecar["spec_options"]["token_upscaling"] is True
    assert "ConvTranspose" not in _ops(art.path)
    # the upstream-exact module (token_upscaling off: sam2's own predict_masks, bit-equal to the predictor)
    upstream = get_spec(name).bind(sam2_tiny, token_upscaling=False).module
    engine = load_engine(art.path)
    for feeds in p.validation:
        with torch.inference_mode():
            ref = upstream(**feeds)
        out = engine({k: v.numpy() for k, v in feeds.items()})
        for spec, want in zip(p.outputs, ref, strict=True):
            np.testing.assert_allclose(out[spec.name], want.numpy(), atol=1e-4, err_msg=spec.name)


def _key_side_scaled(path: str) -> list[bool]:
    """For every Softmax of the graph: is a Mul within two nodes above the K side of its Q·Kᵀ MatMul?"""
    import onnx

    model = onnx.load(path, load_external_data=False)
    made = {o: n for n in model.graph.node for o in n.output}
    out = []
    for n in model.graph.node:
        if n.op_type != "Softmax":
            continue
        mm = made[n.input[0]]
        assert mm.op_type == "MatMul", mm.op_type
        k1 = made.get(mm.input[1])
        k2 = made.get(k1.input[0]) if k1 is not None and k1.input else None
        out.append(any(x is not None and x.op_type == "Mul" for x in (k1, k2)))
    return out


def test_exported_sam2_decoder_scales_q_only_before_qk(sam2_tiny: Any, tmp_path: Path) -> None:
    """sam2's Attention calls scaled_dot_product_attention, whose export scales Q and K by √s (and
    transposes K apart: no fused MatMul). The exported decoder scales Q once before Q·Kᵀ (issue 20 item
    14's TensorRT pattern, as SAM's); upstream's order (scale_first=False) still has the K-side Mul."""
    art = export_onnx(get_spec("sam2_decoder_batched").bind(sam2_tiny), tmp_path, exporter="legacy")
    assert art.sidecar["validation"]["passed"] and art.sidecar["spec_options"]["scale_first"] is True
    scaled = _key_side_scaled(art.path)
    assert len(scaled) == 3 * len(sam2_tiny.sam_mask_decoder.transformer.layers) + 1 and not any(scaled)
    old = get_spec("sam2_decoder_batched").bind(sam2_tiny, scale_first=False)
    sdpa = export_onnx(old, tmp_path / "sdpa", exporter="legacy")
    assert all(_key_side_scaled(sdpa.path)), "SDPA's export scales K too"
