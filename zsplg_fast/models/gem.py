"""Dense CLIP features with GEM's self-self attention (Bousselham et al., "Grounding Everything", CVPR 2024).

Followed (read, not copied) WalBouss/GEM ``gem/gem_utils.py`` (``SelfSelfAttention``, ``GEMResidualBlock``,
``modified_vit_forward``, ``resample_abs_pos_embed``) and ``gem/gem_wrapper.py`` (``apply_gem``), on top of
open_clip 3.3 ``transformer.py`` (``VisionTransformer._embeds``, ``ResidualAttentionBlock``,
``CustomResidualAttentionBlock``, ``Attention``).

What is faithful to GEM:
- In each of the last k blocks a self-self path runs beside the original one. It takes the block's
  q, k and v projections of ``ln_1(x)`` (x = the original path's input), and for each t in (q, k, v) does
  ``iters`` rounds of t ← softmax(τ⁻¹ · t̂ t̂ᵀ) t̂ (t̂ = L2-normalised per head), then one more attention
  built the same way but applied to v. The three results are averaged and go through the block's own
  out-projection (and layer-scale).
- τ⁻¹ = mean over tokens of ‖ln_1(x)‖ · head_dim^-0.5, per image, unless ``gem_temperature`` is given;
  that value multiplies the cosine logits directly, as GEM's ``ss_attn_temp`` does.
- Residuals: the GEM stream starts as the input of the first GEM block and only adds the self-self
  outputs (no MLP); the original stream runs the unmodified blocks. ln_post and proj go on the GEM
  stream's patch tokens (class token dropped).
- Positional embeddings are resampled bicubically (antialiased) to the input grid.

One deliberate difference: GEM's ``depth`` d patches the last d−1 blocks (``range(1, depth)``); here
``gem_depth`` k patches exactly the last k blocks (GEM's default depth 7 ≙ ``gem_depth`` 6). k = 0 gives the
plain ViT's last-block patch tokens after ln_post and proj.

The wrapped tower is only read: its modules and forward stay as they were. There is no control flow on
tensor values, so the module exports to ONNX (shapes come from the input and are static per export).
At a size other than the tower's native one, the antialiased bicubic resampling
(``aten::_upsample_bicubic2d_aa``) exports with the dynamo exporter (tested, parity ≤ 1e-6) but not with
the legacy TorchScript exporter.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from zsplg_fast.config.models import ClipConfig
from zsplg_fast.errors import ConfigError, FeedError
from zsplg_fast.models.clip import ClipBundle, check_dense_capable


def self_self_attention(
    t: torch.Tensor, v: torch.Tensor, inv_temp: torch.Tensor | float, iters: int
) -> torch.Tensor:
    """GEM's self-self attention of ``t`` on itself, then applied to ``v``.

    Args:
        t: (..., N, d) float tokens per head (q, k or v; any leading batch dims).
        v: (..., N, d) float value tokens, same leading dims.
        inv_temp: scalar or tensor broadcastable to (..., N, N): multiplies the cosine logits.
        iters: refinement rounds (≥ 0) before the final assignment to ``v``.

    Returns:
        (..., N, d) float.
    """
    for _ in range(iters):
        t = F.normalize(t, dim=-1)
        t = torch.softmax((t @ t.transpose(-2, -1)) * inv_temp, dim=-1) @ t
    t = F.normalize(t, dim=-1)
    return torch.softmax((t @ t.transpose(-2, -1)) * inv_temp, dim=-1) @ v


def _gem_parts(block: nn.Module, depth: int) -> tuple[nn.Module, nn.Module]:
    """(attention, post-attention norm) of a block, refusing attention variants GEM cannot follow."""
    from open_clip.transformer import Attention

    attn = block.attn
    why = None
    post_norm: nn.Module = nn.Identity()
    if isinstance(attn, nn.MultiheadAttention):
        if not attn._qkv_same_embed_dim or attn.in_proj_weight is None:
            why = "GEM needs self-attention with a packed in_proj_weight"
    elif isinstance(attn, Attention):
        if attn.logit_scale is not None or attn.head_scale is not None:
            why = "GEM does not support scaled-cosine or head-scale attention"
        elif not isinstance(attn.ln_q, nn.Identity) or not isinstance(attn.ln_k, nn.Identity):
            why = "GEM does not support qk-norm attention"
        post_norm = getattr(block, "ln_attn", nn.Identity())
    else:
        why = f"unsupported attention module {type(attn).__name__}"
    if why:
        raise ConfigError("clip.gem_depth", depth, f"{why}; use gem_depth 0 (plain ViT tokens)")
    return attn, post_norm


class DenseClip(nn.Module):
    """Dense, L2-normalised CLIP patch features of an open_clip ViT image tower, GEM-style.

    Args:
        visual: open_clip ``VisionTransformer`` (shared, never modified).
        gem_depth: k, the number of last blocks with the self-self path (0 = plain ViT tokens).
        gem_temperature: inverse temperature multiplying the cosine logits; None = from the mean token norm.
        gem_iters: self-self refinement rounds per GEM block (≥ 1 in configs).
    """

    def __init__(
        self,
        visual: nn.Module,
        gem_depth: int = 1,
        gem_temperature: float | None = None,
        gem_iters: int = 1,
    ) -> None:
        super().__init__()
        check_dense_capable(visual, type(visual).__name__)
        blocks = visual.transformer.resblocks
        if not 0 <= gem_depth <= len(blocks):
            raise ConfigError(
                "clip.gem_depth", gem_depth, f"the ViT has {len(blocks)} blocks", f"0..{len(blocks)}"
            )
        if gem_temperature is not None and gem_temperature <= 0:
            raise ConfigError("clip.gem_temperature", gem_temperature, "must be > 0 (or null)")
        if gem_iters < 0:
            raise ConfigError("clip.gem_iters", gem_iters, "must be >= 0")
        for blk in blocks[len(blocks) - gem_depth :]:
            _gem_parts(blk, gem_depth)
        self.visual = visual
        self.gem_depth = gem_depth
        self.gem_temperature = gem_temperature
        self.gem_iters = gem_iters
        self.patch_size = int(visual.patch_size[0])
        self.out_dim = int(visual.proj.shape[1]) if visual.proj is not None else int(visual.transformer.width)

    @classmethod
    def from_bundle(cls, bundle: ClipBundle, cfg: ClipConfig | None = None) -> DenseClip:
        """DenseClip over ``bundle``'s image tower with the GEM settings of ``cfg`` (defaults if None)."""
        cfg = cfg or ClipConfig()
        return cls(bundle.visual, cfg.gem_depth, cfg.gem_temperature, cfg.gem_iters).eval()

    def positional_embedding(self, grid_h: int, grid_w: int) -> torch.Tensor:
        """(1 + grid_h·grid_w, width) positional embedding, grid part resampled bicubically if needed.

        Follows GEM ``resample_abs_pos_embed`` (bicubic, antialias, class token kept as is).
        """
        pe = self.visual.positional_embedding
        g0, g1 = (int(g) for g in self.visual.grid_size)
        if (grid_h, grid_w) == (g0, g1):
            return pe
        grid = pe[1:].reshape(1, g0, g1, -1).permute(0, 3, 1, 2)
        grid = F.interpolate(grid, size=(grid_h, grid_w), mode="bicubic", antialias=True, align_corners=False)
        grid = grid.permute(0, 2, 3, 1).reshape(grid_h * grid_w, -1)
        return torch.cat([pe[:1], grid], dim=0)

    def _run_block(self, blk: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """The unmodified open_clip block on (B, N, width) tokens."""
        if self.visual.transformer.batch_first:
            return blk(x)
        return blk(x.transpose(0, 1)).transpose(0, 1)

    def _self_self_residual(self, blk: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """GEM residual of one block: ls_1(post_norm(out_proj(mean of q-q, k-k, v-v attention))).

        Args:
            x: (B, N, width) input of the block on the original path.
        """
        attn, post_norm = _gem_parts(blk, self.gem_depth)
        b, n, c = x.shape
        heads = int(attn.num_heads)
        head_dim = c // heads
        y = blk.ln_1(x)
        qkv = F.linear(y, attn.in_proj_weight, attn.in_proj_bias)
        qkv = qkv.reshape(b, n, 3, heads, head_dim).permute(2, 0, 3, 1, 4)  # (3, B, heads, N, head_dim)
        q, k, v = qkv[0], qkv[1], qkv[2]
        if self.gem_temperature is None:
            inv_temp = y.norm(dim=-1).mean(dim=-1).reshape(b, 1, 1, 1) * head_dim**-0.5
        else:
            inv_temp = float(self.gem_temperature)
        out = self_self_attention(torch.stack([q, k, v]), v, inv_temp, self.gem_iters).mean(dim=0)
        out = out.transpose(1, 2).reshape(b, n, c)
        out = getattr(attn, "ln_inner", nn.Identity())(out)
        return blk.ls_1(post_norm(attn.out_proj(out)))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Dense features.

        Args:
            images: (B, 3, H, W) float32, normalised with the CLIP mean/std; H, W multiples of the patch
                (any size: the positional embedding is resampled).

        Returns:
            (B, D, H/p, W/p) float32, unit L2 norm along D (D = CLIP joint embedding width).
        """
        if images.ndim != 4 or images.shape[1] != 3:
            raise FeedError("images", "(B, 3, H, W)", str(tuple(images.shape)))
        p = self.patch_size
        if images.shape[-2] % p or images.shape[-1] % p:
            raise FeedError("images", f"H and W multiples of the patch size {p}", str(tuple(images.shape)))
        vis = self.visual
        x = vis.conv1(images)  # (B, width, gh, gw)
        b, _, gh, gw = x.shape
        x = x.flatten(2).transpose(1, 2)  # (B, gh·gw, width), row-major like open_clip
        cls = vis.class_embedding.to(x.dtype).reshape(1, 1, -1).expand(b, -1, -1)
        x = torch.cat([cls, x], dim=1) + self.positional_embedding(gh, gw).to(x.dtype)
        x = vis.ln_pre(x)  # patch dropout is skipped: it is identity in eval and would break the grid

        blocks = vis.transformer.resblocks
        first_gem = len(blocks) - self.gem_depth
        for blk in blocks[:first_gem]:
            x = self._run_block(blk, x)
        x_gem = x
        for i in range(first_gem, len(blocks)):
            x_gem = x_gem + self._self_self_residual(blocks[i], x)
            if i < len(blocks) - 1:  # the last block's original output is not needed
                x = self._run_block(blocks[i], x)

        tokens = vis.ln_post(x_gem[:, 1:])
        if vis.proj is not None:
            tokens = tokens @ vis.proj
        tokens = F.normalize(tokens, dim=-1)
        return tokens.transpose(1, 2).reshape(b, self.out_dim, gh, gw)
