"""sam_decoder_image + sam_decoder_shared: the first block's image-side work once per image, same numbers
as upstream's PromptEncoder + MaskDecoder, exported and chained in onnxruntime."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from zsplg_fast.engines.base import load_engine
from zsplg_fast.export.onnx import export_onnx
from zsplg_fast.export.specs import get_spec
from zsplg_fast.export.specs.sam_decoder_shared import SHARED_NAMES, SamDecoderImage, SamDecoderShared

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::DeprecationWarning")


def _upstream(sam: Any, emb: torch.Tensor, coords: torch.Tensor, labels: torch.Tensor) -> tuple:
    """segment-anything's own path (MaskDecoder repeats the embedding per prompt)."""
    sparse, dense = sam.prompt_encoder(points=(coords, labels), boxes=None, masks=None)
    return sam.mask_decoder(emb, sam.prompt_encoder.get_dense_pe(), sparse, dense, multimask_output=True)


def _prompts(sam: Any, b: int, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    s = sam.image_encoder.img_size
    return torch.rand(b, n, 2, generator=gen) * s, torch.randint(0, 2, (b, n), generator=gen).float()


@pytest.mark.parametrize("scale_first", [False, True])
@torch.inference_mode()
def test_shared_decoder_equals_upstream_mask_decoder(tiny_sam: Any, scale_first: bool) -> None:
    torch.manual_seed(1)
    g, c = tiny_sam.prompt_encoder.image_embedding_size[0], tiny_sam.prompt_encoder.embed_dim
    emb = torch.randn(1, c, g, g)
    shared = dict(zip(SHARED_NAMES, SamDecoderImage(tiny_sam)(emb), strict=True))
    assert shared["image_tokens"].shape == (1, g * g, c) and shared["t2i_keys"].shape == (1, g * g, c // 2)
    dec = SamDecoderShared(tiny_sam, scale_first=scale_first)
    for b, n, seed in ((1, 1, 0), (9, 1, 1), (5, 3, 2)):
        coords, labels = _prompts(tiny_sam, b, n, seed)
        masks, iou = dec(**shared, point_coords=coords, point_labels=labels)
        ref_masks, ref_iou = _upstream(tiny_sam, emb, coords, labels)
        assert masks.shape == ref_masks.shape == (b, 3, 4 * g, 4 * g)
        assert float((masks - ref_masks).abs().max()) <= 1e-5 and float((iou - ref_iou).abs().max()) <= 1e-5
        # per-prompt outputs: one prompt alone gives its row of the batch (the shared tensors are shared)
        one, _ = dec(**shared, point_coords=coords[-1:], point_labels=labels[-1:])
        assert float((one[0] - masks[-1]).abs().max()) <= 1e-5


def test_shared_pair_exports_validates_and_chains_in_onnxruntime(tiny_sam: Any, tmp_path: Path) -> None:
    arts = {
        n: export_onnx(get_spec(n).bind(tiny_sam), tmp_path)
        for n in ("sam_decoder_image", "sam_decoder_shared")
    }
    assert all(a.sidecar["validation"]["passed"] for a in arts.values())
    image, dec = (load_engine(arts[n].path) for n in ("sam_decoder_image", "sam_decoder_shared"))
    g, c = tiny_sam.prompt_encoder.image_embedding_size[0], tiny_sam.prompt_encoder.embed_dim
    emb = torch.randn(1, c, g, g, generator=torch.Generator().manual_seed(3))
    coords, labels = _prompts(tiny_sam, 6, 1, 4)
    shared = image({"image_embeddings": emb.numpy()})
    out = dec({**shared, "point_coords": coords.numpy(), "point_labels": labels.numpy()})
    with torch.inference_mode():
        ref_masks, ref_iou = _upstream(tiny_sam, emb, coords, labels)
    np.testing.assert_allclose(out["low_res_masks"], ref_masks.numpy(), atol=1e-4)
    np.testing.assert_allclose(out["iou_predictions"], ref_iou.numpy(), atol=1e-4)


def _softmax_inputs(path: Path) -> list[tuple[str, str]]:
    """(producer of each Softmax's input, producer of that MatMul's first input) in an ONNX graph."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    made = {o: n for n in model.graph.node for o in n.output}
    out = []
    for n in model.graph.node:
        if n.op_type == "Softmax":
            mm = made[n.input[0]]
            out.append((mm.op_type, made[mm.input[0]].op_type if mm.input[0] in made else "input"))
    return out


@pytest.mark.parametrize("name", ["sam_decoder_shared", "sam_decoder_batched", "sam_decoder"])
def test_exported_decoder_scales_q_before_qk(tiny_sam: Any, tmp_path: Path, name: str) -> None:
    """Issue 20 (14): every attention of the exported decoder is MatMul(Q·s, Kᵀ) → Softmax (TensorRT's
    MHA fusion pattern), not MatMul → Div → Softmax; the export still validates against the module, and
    the module equals upstream (test above; the chain test compares the ONNX with upstream)."""
    art = export_onnx(get_spec(name).bind(tiny_sam), tmp_path)
    assert art.sidecar["validation"]["passed"] and art.sidecar["spec_options"]["scale_first"] is True
    pairs = _softmax_inputs(Path(art.path))
    depth = len(tiny_sam.mask_decoder.transformer.layers)
    assert len(pairs) == 3 * depth + 1  # self, token→image, image→token per block + the final attention
    assert all(p == ("MatMul", "Mul") for p in pairs), pairs
    upstream = export_onnx(get_spec(name).bind(tiny_sam, scale_first=False), tmp_path / "upstream")
    assert all(p[0] == "Div" for p in _softmax_inputs(Path(upstream.path))), "upstream's order differs"
