"""DenseClip (GEM): shapes, norms, k = 0 parity with open_clip, the self-self path's wiring, ONNX export."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from zsplg_fast.config.models import ClipConfig
from zsplg_fast.errors import ConfigError, FeedError
from zsplg_fast.models import ClipBundle, DenseClip, self_self_attention


def images(b: int, size: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(b, 3, size, size, generator=torch.Generator().manual_seed(seed))


def as_tokens(dense: torch.Tensor) -> torch.Tensor:
    """(B, D, h, w) → (B, h·w, D), row-major like open_clip's patch order."""
    return dense.flatten(2).transpose(1, 2)


def block_inputs(bundle: ClipBundle, x: torch.Tensor) -> list[torch.Tensor]:
    """Input of every block, (B, N, width), from open_clip's own forward_intermediates."""
    vis = bundle.visual
    out = vis.forward_intermediates(x, indices=None, output_fmt="NLC", output_extra_tokens=True)
    outs = [
        torch.cat([p, t], dim=1)
        for p, t in zip(out["image_intermediates_prefix"], out["image_intermediates"], strict=True)
    ]
    return [vis._embeds(x), *outs[:-1]]  # _embeds ends with ln_pre


@pytest.mark.parametrize("depth,iters,size", [(1, 1, 224), (3, 2, 224), (2, 1, 448)])
def test_shape_and_unit_norm(tiny_clip: ClipBundle, depth: int, iters: int, size: int) -> None:
    dense = DenseClip(tiny_clip.visual, gem_depth=depth, gem_iters=iters).eval()
    with torch.no_grad():
        out = dense(images(2, size))
    grid = size // tiny_clip.patch_size
    assert out.shape == (2, tiny_clip.embed_dim, grid, grid) and out.dtype == torch.float32
    torch.testing.assert_close(out.norm(dim=1), torch.ones(2, grid, grid))


@pytest.mark.parametrize("which", ["tiny_clip", "tiny_clip_custom"])
def test_depth_zero_equals_plain_vit_tokens(which: str, request: pytest.FixtureRequest) -> None:
    bundle: ClipBundle = request.getfixturevalue(which)
    x = images(2, 224)
    with torch.no_grad():
        out = DenseClip(bundle.visual, gem_depth=0)(x)
        ref = bundle.visual.forward_intermediates(
            x, indices=1, normalize_intermediates=True, intermediates_only=True, output_fmt="NLC"
        )["image_intermediates"][0]
        ref = F.normalize(ref @ bundle.visual.proj, dim=-1)
    torch.testing.assert_close(as_tokens(out), ref, atol=1e-5, rtol=0)


@pytest.mark.parametrize("which", ["tiny_clip", "tiny_clip_custom"])
@pytest.mark.parametrize("depth", [1, 2, 3])
def test_sharp_temperature_reduces_to_value_path(
    which: str, depth: int, request: pytest.FixtureRequest
) -> None:
    """With a huge inverse temperature every token attends only to itself, so each GEM block adds
    r_i = ls_1(post_norm(out_proj(inner_norm(v_i)))), v_i from ln_1 of that block's input on the original
    path, and the GEM stream is x_(L-k) + Σ r_i (no MLP). Checks inputs, projections and residuals."""
    bundle: ClipBundle = request.getfixturevalue(which)
    vis, x = bundle.visual, images(1, 224)
    blocks = vis.transformer.resblocks
    with torch.no_grad():
        out = DenseClip(vis, gem_depth=depth, gem_temperature=1e6, gem_iters=2)(x)
        inputs = block_inputs(bundle, x)
        stream = inputs[len(blocks) - depth]
        for i in range(len(blocks) - depth, len(blocks)):
            blk, x_in = blocks[i], inputs[i]
            w, b = blk.attn.in_proj_weight, blk.attn.in_proj_bias
            width = x_in.shape[-1]
            v = F.linear(blk.ln_1(x_in), w[2 * width :], b[2 * width :])
            v = getattr(blk.attn, "ln_inner", torch.nn.Identity())(v)
            stream = stream + blk.ls_1(getattr(blk, "ln_attn", torch.nn.Identity())(blk.attn.out_proj(v)))
        ref = F.normalize(vis.ln_post(stream[:, 1:]) @ vis.proj, dim=-1)
    torch.testing.assert_close(as_tokens(out), ref, atol=1e-4, rtol=0)


def test_auto_temperature_and_head_split(tiny_clip: ClipBundle) -> None:
    """Last block, k = 1: per head, mean over t in (q, k, v) of self_self_attention(t, v, τ⁻¹), with
    τ⁻¹ = mean token norm of ln_1(x) · head_dim^-0.5; the q, k, v split and heads done by slicing."""
    vis, x = tiny_clip.visual, images(2, 224)
    blk = vis.transformer.resblocks[-1]
    heads = blk.attn.num_heads
    with torch.no_grad():
        out = DenseClip(vis, gem_depth=1, gem_iters=2)(x)
        x_in = block_inputs(tiny_clip, x)[-1]
        y = blk.ln_1(x_in)
        q, k, v = F.linear(y, blk.attn.in_proj_weight, blk.attn.in_proj_bias).chunk(3, dim=-1)
        hd = q.shape[-1] // heads
        merged = []
        for n in range(x.shape[0]):
            inv_temp = y[n].norm(dim=-1).mean() / math.sqrt(hd)
            per_head = []
            for h in range(heads):
                cut = slice(h * hd, (h + 1) * hd)
                vh = v[n, :, cut]
                per_head.append(
                    sum(self_self_attention(t[n, :, cut], vh, inv_temp, 2) for t in (q, k, v)) / 3
                )
            merged.append(torch.cat(per_head, dim=-1))
        stream = x_in + blk.attn.out_proj(torch.stack(merged))
        ref = F.normalize(vis.ln_post(stream[:, 1:]) @ vis.proj, dim=-1)
    torch.testing.assert_close(as_tokens(out), ref, atol=1e-5, rtol=0)


def test_gem_differs_from_plain_and_temperature_matters(tiny_clip: ClipBundle) -> None:
    x = images(1, 224)
    with torch.no_grad():
        plain = DenseClip(tiny_clip.visual, gem_depth=0)(x)
        auto = DenseClip(tiny_clip.visual, gem_depth=2)(x)
        fixed = DenseClip(tiny_clip.visual, gem_depth=2, gem_temperature=0.5)(x)
    assert (plain - auto).abs().max() > 1e-2
    assert (auto - fixed).abs().max() > 1e-3


def test_self_self_attention_matches_formula() -> None:
    """Per-token loops over the formula: t ← softmax(τ⁻¹ t̂ t̂ᵀ) t̂ (iters times), out = softmax(τ⁻¹ t̂ t̂ᵀ) v."""
    g = torch.Generator().manual_seed(0)
    t, v = (
        torch.randn(5, 3, generator=g, dtype=torch.float64),
        torch.randn(5, 3, generator=g, dtype=torch.float64),
    )

    def attend(tok: torch.Tensor, val: torch.Tensor, inv_temp: float) -> torch.Tensor:
        unit = [row / math.sqrt(float((row * row).sum())) for row in tok]
        rows = []
        for i in range(len(unit)):
            logits = [inv_temp * float((unit[i] * unit[j]).sum()) for j in range(len(unit))]
            weights = np.exp(np.array(logits) - max(logits))
            weights /= weights.sum()
            rows.append(sum(float(w) * val[j] for j, w in enumerate(weights)))
        return torch.stack(rows)

    for iters in (0, 1, 3):
        ref = t.clone()
        for _ in range(iters):
            ref = attend(ref, F.normalize(ref, dim=-1), 2.5)
        ref = attend(ref, v, 2.5)
        torch.testing.assert_close(self_self_attention(t, v, 2.5, iters), ref)


def test_positional_embedding_resampling(random_clip: Callable[[str], ClipBundle]) -> None:
    """Channel 0 holds the row index, channel 1 the column, channel 2 the row squared: resampled, 0 and 1
    must stay constant along the other axis and grow along their own (row-major token layout)."""
    vis = random_clip("zsplg-test-vit").visual
    with torch.no_grad():
        pe = torch.zeros_like(vis.positional_embedding)
        rows, cols = torch.meshgrid(torch.arange(7.0), torch.arange(7.0), indexing="ij")
        pe[0, :] = 5.0
        pe[1:, 0], pe[1:, 1], pe[1:, 2] = rows.flatten(), cols.flatten(), rows.flatten() ** 2
        vis.positional_embedding.copy_(pe)
    dense = DenseClip(vis, gem_depth=1)
    assert dense.positional_embedding(7, 7) is vis.positional_embedding
    big = dense.positional_embedding(14, 10).detach()
    assert big.shape == (1 + 14 * 10, pe.shape[1])
    assert torch.equal(big[0], pe[0])
    grid = big[1:].reshape(14, 10, -1)
    torch.testing.assert_close(grid[..., 0], grid[:, :1, 0].expand(14, 10))
    torch.testing.assert_close(grid[..., 1], grid[:1, :, 1].expand(14, 10))
    assert (grid[1:, 0, 0] >= grid[:-1, 0, 0]).all() and grid[-1, 0, 0] - grid[0, 0, 0] > 5
    assert (grid[0, 1:, 1] >= grid[0, :-1, 1]).all() and grid[0, -1, 1] - grid[0, 0, 1] > 5
    # Keys' cubic (a = -0.5, torch's antialiased bicubic, as GEM uses) reproduces quadratics inside the
    # grid: output row i samples source row i/2 - 1/4 (7 → 14, half-pixel centres). Bilinear would not.
    src = torch.arange(3, 11) / 2 - 0.25
    torch.testing.assert_close(grid[3:11, 4, 2], src**2, atol=1e-4, rtol=0)
    assert grid[..., 3:].abs().max() == 0


def test_wrapped_tower_is_untouched(tiny_clip: ClipBundle) -> None:
    vis, x = tiny_clip.visual, images(1, 224)
    before = {k: v.clone() for k, v in vis.state_dict().items()}
    with torch.no_grad():
        ref = vis(x)
        DenseClip(vis, gem_depth=3, gem_iters=2)(images(1, 448))
        after = vis(x)
    assert torch.equal(ref, after)
    assert all(torch.equal(before[k], v) for k, v in vis.state_dict().items())
    assert "forward" not in vis.__dict__  # no instance patching (GEM's wrapper patches it)
    assert {type(b).__name__ for b in vis.transformer.resblocks} == {"ResidualAttentionBlock"}


def test_from_bundle_uses_config(tiny_clip: ClipBundle) -> None:
    dense = DenseClip.from_bundle(tiny_clip, ClipConfig(gem_depth=2, gem_temperature=3.0, gem_iters=2))
    assert (dense.gem_depth, dense.gem_temperature, dense.gem_iters) == (2, 3.0, 2)
    assert not dense.training and dense.out_dim == tiny_clip.embed_dim


def test_bad_settings_and_inputs(tiny_clip: ClipBundle, random_clip: Callable[[str], ClipBundle]) -> None:
    with pytest.raises(ConfigError, match="3 blocks"):
        DenseClip(tiny_clip.visual, gem_depth=4)
    with pytest.raises(ConfigError, match="> 0"):
        DenseClip(tiny_clip.visual, gem_temperature=0.0)
    qknorm = random_clip("zsplg-test-vit-qknorm")
    with pytest.raises(ConfigError, match="qk-norm"):
        DenseClip(qknorm.visual, gem_depth=1)
    DenseClip(qknorm.visual, gem_depth=0)  # plain tokens need no attention internals
    dense = DenseClip(tiny_clip.visual)
    with pytest.raises(FeedError, match="multiples of the patch size 32"):
        dense(torch.zeros(1, 3, 230, 224))
    with pytest.raises(FeedError, match=r"\(B, 3, H, W\)"):
        dense(torch.zeros(3, 224, 224))


def test_exports_to_onnx_at_a_new_size(tiny_clip: ClipBundle, tmp_path: Path) -> None:
    """The dynamo exporter (project default) handles the antialiased bicubic pos-embed resampling."""
    ort = pytest.importorskip("onnxruntime", reason="onnxruntime checks the exported graph")
    dense = DenseClip(tiny_clip.visual, gem_depth=2).eval()
    path = tmp_path / "dense.onnx"
    batch = torch.export.Dim("batch", min=1, max=8)
    torch.onnx.export(
        dense,
        (images(2, 288),),
        str(path),
        input_names=["images"],
        output_names=["features"],
        dynamo=True,
        external_data=False,
        dynamic_shapes={"images": {0: batch}},
    )
    x = images(3, 288, seed=1)
    with torch.no_grad():
        ref = dense(x).numpy()
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    out = sess.run(None, {"images": x.numpy()})[0]
    assert out.shape == (3, 32, 9, 9)
    np.testing.assert_allclose(out, ref, atol=1e-4)
