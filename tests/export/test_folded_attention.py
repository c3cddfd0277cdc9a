"""``decoder_attention: folded`` (export/specs/folded.py): the AMG decoders with the cross attention's
image-side projections folded to the prompt-token side compute upstream's function (SAM and SAM 2,
random weights with random biases), their exported graphs project no per-prompt image tokens, and the
option flows from the config through ``run_export`` into the sidecar."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
import torch
from torch import nn

from zsplg_fast.export.onnx import export_onnx
from zsplg_fast.export.specs import get_spec
from zsplg_fast.export.specs.folded import attend_image_keys, attend_to_tokens

pytestmark = pytest.mark.filterwarnings(
    "ignore::UserWarning", "ignore::DeprecationWarning", "ignore::FutureWarning"
)


def _random_biases(model: nn.Module, seed: int) -> None:
    """Every Linear bias of the mask decoder random (the folds move biases: zeros would hide mistakes)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Linear) and m.bias is not None:
                m.bias.copy_(torch.randn(m.bias.shape, generator=gen) * 0.5)


@pytest.fixture(scope="module")
def sam() -> Any:
    from zsplg_fast.models import build_sam

    torch.manual_seed(3)
    model = build_sam("tiny")
    _random_biases(model.mask_decoder, 4)
    return model


@pytest.fixture(scope="module")
def sam2() -> Any:
    pytest.importorskip("sam2", reason="the [sam2] extra is not installed")
    from zsplg_fast.models import build_sam

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.manual_seed(5)
        model = build_sam("sam2_tiny")
    _random_biases(model.sam_mask_decoder, 6)
    return model


@pytest.mark.parametrize("heads,tq,tk", [(4, 7, 256), (8, 3, 64)])
@torch.inference_mode()
def test_folded_attentions_equal_upstream_attention(heads: int, tq: int, tk: int) -> None:
    from segment_anything.modeling.transformer import Attention

    torch.manual_seed(heads)
    attn = Attention(64, heads, downsample_rate=2).eval()
    _random_biases(attn, heads)
    b = 3
    tokens, image = torch.randn(b, tq, 64), torch.randn(b, tk, 64)
    pe = torch.randn(1, tk, 64)
    ref = attn(q=tokens, k=image + pe, v=image)  # token → image
    assert torch.allclose(attend_image_keys(attn, tokens, image + pe, image), ref, atol=1e-5)
    ref = attn(q=image + pe, k=tokens, v=tokens)  # image → token
    assert torch.allclose(attend_to_tokens(attn, image + pe, tokens, tokens), ref, atol=1e-5)
    # a shared (batch-1) image side, projected once: the same answer for every prompt set
    shared = torch.randn(1, tk, 64)
    ref = attn(q=shared, k=tokens, v=tokens)
    got = attend_to_tokens(attn, attn.q_proj(shared), tokens, tokens, q_projected=True)
    assert got.shape == (b, tk, 64) and torch.allclose(got, ref, atol=1e-5)


def _modules_agree(spec: str, model: Any, upstream_options: dict[str, bool]) -> None:
    ref = get_spec(spec).bind(model, **upstream_options)
    folded = get_spec(spec).bind(model, folded=True)
    assert folded.options["folded"] is True
    with torch.inference_mode():
        for feeds in (*ref.validation, ref.dummy):
            for r, f in zip(ref.module(**feeds), folded.module(**feeds), strict=True):
                assert r.shape == f.shape
                err = float((r - f).abs().max())
                assert err <= 1e-4 * max(1.0, float(r.abs().max())), (spec, err)


def test_folded_sam_decoder_shared_equals_upstream(sam: Any) -> None:
    _modules_agree("sam_decoder_shared", sam, {"scale_first": False, "token_upscaling": False})


def test_folded_sam2_decoder_batched_equals_upstream(sam2: Any) -> None:
    # validation covers the ignored mask prompt at batch 1 (block 1 shared) and one mask per prompt (m2m)
    upstream = {"share_image": False, "token_upscaling": False, "scale_first": False}
    _modules_agree("sam2_decoder_batched", sam2, upstream)


def _per_prompt_projections(path: Path, tokens: int, internal: int) -> list[str]:
    """Tensors of shape (batch, g², Ci): image tokens projected per prompt set (a symbolic batch; data
    propagation resolves the token axis through SAM 2's Reshapes)."""
    model = onnx.shape_inference.infer_shapes(onnx.load(str(path)), data_prop=True)
    names = []
    for vi in model.graph.value_info:
        dims = vi.type.tensor_type.shape.dim
        if len(dims) == 3 and dims[0].dim_param and [d.dim_value for d in dims[1:]] == [tokens, internal]:
            names.append(vi.name)
    return names


@pytest.mark.parametrize("family", ["sam", "sam2"])
def test_folded_export_projects_no_image_tokens_per_prompt(
    family: str, sam: Any, sam2: Any, tmp_path: Path
) -> None:
    from zsplg_fast.engines.ort import OrtEngine

    model, spec = {"sam": (sam, "sam_decoder_shared"), "sam2": (sam2, "sam2_decoder_batched")}[family]
    decoder = model.mask_decoder if family == "sam" else model.sam_mask_decoder
    attn = decoder.transformer.final_attn_token_to_image
    tokens = 16 * 16  # both tiny models: 256 px input, 16×16 embedding grid
    outs, counts = {}, {}
    for form, folded in (("fused", False), ("folded", True)):
        p = get_spec(spec).bind(model, folded=folded)
        art = export_onnx(p, tmp_path / form, exporter="legacy", source={"weights": "random-init"})
        assert art.sidecar["validation"]["passed"] and art.sidecar["spec_options"]["folded"] is folded
        counts[form] = _per_prompt_projections(art.path, tokens, int(attn.internal_dim))
        outs[form] = OrtEngine(art.path)({k: v.numpy() for k, v in p.validation[-1].items()})
    # SAM 2's first block keeps its image side's projections at the mask prompt's batch (1 in AMG's
    # first pass: once per call; sam_decoder_shared takes them as inputs)
    later = {form: [n for n in names if "layers.0/" not in n] for form, names in counts.items()}
    assert len(later["fused"]) >= 3 and later["folded"] == [], counts
    assert family == "sam2" or counts["folded"] == []
    for name, ref in outs["fused"].items():
        np.testing.assert_allclose(outs["folded"][name], ref, atol=1e-4, rtol=1e-4)


def test_decoder_attention_flows_from_the_config(tiny_sam_ckpt: Path, tmp_path: Path) -> None:
    from zsplg_fast.config import load_config
    from zsplg_fast.errors import ConfigError
    from zsplg_fast.export.artifact import read_sidecar
    from zsplg_fast.export.pipeline import run_export

    over = {"sam.variant": "tiny", "sam.checkpoint": str(tiny_sam_ckpt), "export.out_dir": str(tmp_path)}
    with pytest.raises(ConfigError, match="fused, folded"):
        load_config(None, {**over, "export.decoder_attention": "flash"})
    cfg = load_config(None, {**over, "export.decoder_attention": "folded"})
    run_export("sam", cfg, only=["sam_decoder_shared"])
    side = read_sidecar(tmp_path / "sam_decoder_shared.onnx")
    assert side["spec_options"]["folded"] is True and side["validation"]["passed"]
