"""``sam_decoder_image`` + ``sam_decoder_shared``: the batched AMG decoder with its per-image work split off.

For point prompts without a mask input the dense prompt embedding is ``no_mask_embed`` for every prompt,
so in the FIRST two-way attention block of SAM's ``TwoWayTransformer`` everything on the image side is
the same for every prompt of an image (follows segment-anything ``modeling/transformer.py``
``TwoWayAttentionBlock.forward`` and ``mask_decoder.py`` ``predict_masks``):

- ``src`` = embedding + no-mask embedding (upstream repeats it per prompt);
- the token→image attention's key projection ``k_proj(src + pe)`` and value projection ``v_proj(src)``;
- the image→token attention's query projection ``q_proj(src + pe)``.

After that attention the image tokens (``keys``) carry each prompt's update, so block 2 and the final
attention stay per prompt. ``sam_decoder_image`` computes the shared tensors once per image (crop);
``sam_decoder_shared`` takes them as inputs with B prompt sets, so a mask generator that feeds an image's
prompts in many calls pays the image-side projections once, not once per call (or per prompt).

``sam_decoder_image``: ``image_embeddings`` (1, C, g, g) float32 → ``image_tokens`` (1, g², C) (= src,
flattened row-major), ``t2i_keys``, ``t2i_values``, ``i2t_queries`` (1, g², Ci) float32 (Ci = C / 2 for
SAM's downsampled cross attention).
``sam_decoder_shared``: those four + ``point_coords`` (B, N, 2), ``point_labels`` (B, N) (as
``sam_decoder_batched``) → ``low_res_masks`` (B, 3, 4g, 4g) logits, ``iou_predictions`` (B, 3).
Numerically upstream's ``PromptEncoder`` + ``MaskDecoder(multimask_output=True)``, multimask outputs.
"""

from __future__ import annotations

import math

import torch
from segment_anything.modeling import Sam
from segment_anything.modeling.transformer import Attention
from torch import nn

from zsplg_fast.export.specs.attention import scale_before_qk, scale_first_forward, separate_heads
from zsplg_fast.export.specs.base import ExportSpec, Prepared, rand, randn, seeded
from zsplg_fast.export.specs.folded import attend_to_tokens, folded_attention
from zsplg_fast.export.specs.sam_decoder_batched import PROMPT_PROFILES, SamDecoderBatched, decoder_metadata
from zsplg_fast.export.tensors import TensorSpec, Tolerance
from zsplg_fast.models import sam_info

SHARED_NAMES = ("image_tokens", "t2i_keys", "t2i_values", "i2t_queries")
"""Outputs of ``sam_decoder_image`` = the per-image inputs of ``sam_decoder_shared``."""


def attend_projected(attn: Attention, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Upstream ``Attention.forward`` from already-projected q (bq, tq, Ci), k, v (bk, tk, Ci); batch 1
    broadcasts against B. Returns (max(bq, bk), tq, C) after ``out_proj``."""
    n = attn.num_heads
    qh, kh, vh = separate_heads(q, n), separate_heads(k, n), separate_heads(v, n)
    if Attention.forward is scale_first_forward:  # inside scale_before_qk: the exported order
        w = torch.softmax((qh * (1.0 / math.sqrt(qh.shape[-1]))) @ kh.permute(0, 1, 3, 2), dim=-1)
    else:  # upstream's order
        w = torch.softmax((qh @ kh.permute(0, 1, 3, 2)) / math.sqrt(qh.shape[-1]), dim=-1)
    out = w @ vh
    b, _, t, c = out.shape
    return attn.out_proj(out.transpose(1, 2).reshape(b, t, n * c))


class SamDecoderImage(nn.Module):
    """(1, C, g, g) embedding → the first block's prompt-independent tensors (see module docstring)."""

    def __init__(self, sam: Sam) -> None:
        super().__init__()
        self.prompt_encoder = sam.prompt_encoder
        self.block = sam.mask_decoder.transformer.layers[0]

    def forward(self, image_embeddings: torch.Tensor) -> tuple[torch.Tensor, ...]:
        pe_mod = self.prompt_encoder
        src = image_embeddings + pe_mod.no_mask_embed.weight.reshape(1, -1, 1, 1)
        tokens = src.flatten(2).permute(0, 2, 1)  # (1, g², C)
        pe = pe_mod.get_dense_pe().flatten(2).permute(0, 2, 1)
        keyed = tokens + pe
        t2i, i2t = self.block.cross_attn_token_to_image, self.block.cross_attn_image_to_token
        return tokens, t2i.k_proj(keyed), t2i.v_proj(tokens), i2t.q_proj(keyed)


class SamDecoderShared(nn.Module):
    """Shared per-image tensors (1, g², ·) + B prompt sets → (B,3,4g,4g) logits and (B,3) IoU."""

    def __init__(
        self, sam: Sam, scale_first: bool = False, token_upscaling: bool = False, folded: bool = False
    ) -> None:
        super().__init__()
        # point embedding + heads (shares the modules); token_upscaling: upscaling.py (the export's form)
        self.points = SamDecoderBatched(sam, token_upscaling=token_upscaling)
        self.scale_first = scale_first  # exported: attention scale on Q before Q·Kᵀ (attention.py)
        self.folded = folded  # exported for onnxruntime CPU: projections folded to the token side (folded.py)
        self.prompt_encoder = sam.prompt_encoder
        self.mask_decoder = sam.mask_decoder

    def _first_block(
        self,
        tokens: torch.Tensor,
        image_tokens: torch.Tensor,
        t2i_keys: torch.Tensor,
        t2i_values: torch.Tensor,
        i2t_queries: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Upstream's first ``TwoWayAttentionBlock`` (``skip_first_layer_pe``) with the image side given."""
        blk = self.mask_decoder.transformer.layers[0]
        q = blk.norm1(blk.self_attn(q=tokens, k=tokens, v=tokens))
        t2i = blk.cross_attn_token_to_image
        q = blk.norm2(q + attend_projected(t2i, t2i.q_proj(q + tokens), t2i_keys, t2i_values))
        q = blk.norm3(q + blk.mlp(q))
        i2t = blk.cross_attn_image_to_token
        keyed = q + tokens
        if self.folded:
            return q, blk.norm4(image_tokens + attend_to_tokens(i2t, i2t_queries, keyed, q, q_projected=True))
        keys = blk.norm4(image_tokens + attend_projected(i2t, i2t_queries, i2t.k_proj(keyed), i2t.v_proj(q)))
        return q, keys

    def forward(
        self,
        image_tokens: torch.Tensor,
        t2i_keys: torch.Tensor,
        t2i_values: torch.Tensor,
        i2t_queries: torch.Tensor,
        point_coords: torch.Tensor,
        point_labels: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        md, tr = self.mask_decoder, self.mask_decoder.transformer
        sparse = self.points.embed_points(point_coords, point_labels)
        b = sparse.shape[0]
        out_tokens = torch.cat([md.iou_token.weight, md.mask_tokens.weight], dim=0)
        tokens = torch.cat([out_tokens.unsqueeze(0).expand(b, -1, -1), sparse], dim=1)
        pe_grid = self.prompt_encoder.get_dense_pe()
        g_h, g_w = pe_grid.shape[-2], pe_grid.shape[-1]
        pe = pe_grid.flatten(2).permute(0, 2, 1)
        with scale_before_qk(self.scale_first), folded_attention(self.folded):
            queries, keys = self._first_block(tokens, image_tokens, t2i_keys, t2i_values, i2t_queries)
            for layer in tr.layers[1:]:
                queries, keys = layer(queries=queries, keys=keys, query_pe=tokens, key_pe=pe)
            attn = tr.final_attn_token_to_image(q=queries + tokens, k=keys + pe, v=keys)
        hs = tr.norm_final_attn(queries + attn)
        return self.points.heads(hs, keys, g_h, g_w)


def _image_feeds(module: SamDecoderImage, emb: torch.Tensor) -> dict[str, torch.Tensor]:
    """The shared tensors of ``emb`` (a CPU feed), computed on the module's device, returned on the CPU
    like every spec feed (a model bound on CUDA, as the GPU check and CUDA labeling do, must work too)."""
    device = next(module.parameters()).device
    with torch.inference_mode():
        outs = module(emb.to(device))
    return {n: t.cpu().clone() for n, t in zip(SHARED_NAMES, outs, strict=True)}


def _point_feeds(gen: torch.Generator, b: int, n: int, s: int) -> dict[str, torch.Tensor]:
    return {
        "point_coords": rand((b, n, 2), gen, float(s)),
        "point_labels": torch.randint(0, 2, (b, n), generator=gen).to(torch.float32),
    }


def _shared_specs(sam: Sam) -> tuple[TensorSpec, ...]:
    info = sam_info(sam)
    hw, c = info.embedding_size**2, info.prompt_embed_dim
    ci = int(sam.mask_decoder.transformer.layers[0].cross_attn_token_to_image.internal_dim)
    return (
        TensorSpec("image_tokens", "float32", (1, hw, c)),
        *(TensorSpec(n, "float32", (1, hw, ci)) for n in SHARED_NAMES[1:]),
    )


_TOL = Tolerance(atol=1e-4, rtol=1e-4, min_cosine=0.99999)


def prepare_decoder_image(sam: Sam) -> Prepared:
    """Bind ``sam_decoder_image`` to ``sam``: one random (1, C, g, g) embedding (no dynamic axes)."""
    info = sam_info(sam)
    g, c = info.embedding_size, info.prompt_embed_dim
    gen = seeded(5)
    return Prepared(
        module=SamDecoderImage(sam).eval(),
        inputs=(TensorSpec("image_embeddings", "float32", (1, c, g, g)),),
        outputs=_shared_specs(sam),
        dummy={"image_embeddings": randn((1, c, g, g), gen)},
        validation=[{"image_embeddings": randn((1, c, g, g), gen)}],
        tolerances={n: _TOL for n in SHARED_NAMES},
        metadata={"pairs_with": "sam_decoder_shared", "embedding_grid": g},
    )


def prepare_decoder_shared(
    sam: Sam, scale_first: bool = True, token_upscaling: bool = True, folded: bool = False
) -> Prepared:
    """Bind ``sam_decoder_shared`` to ``sam``: dummy B=5, N=2; validation (1, 1) and (7, 3); the shared
    inputs come from ``sam_decoder_image`` on random embeddings. ``scale_first``: the attention scale on
    Q before Q·Kᵀ (TensorRT's attention fusion; the export default), False = upstream's order (the
    torch labeler's module). ``token_upscaling``: the mask upscaling as MatMuls on token rows, no
    ConvTranspose (upscaling.py; the export default), False = upstream's modules. ``folded``: the cross
    attention's image-side projections folded to the token side (folded.py; onnxruntime CPU's form,
    ``export.decoder_attention: folded``), False = TensorRT's fused pattern."""
    info = sam_info(sam)
    s, g, c = info.img_size, info.embedding_size, info.prompt_embed_dim
    k = int(sam.mask_decoder.num_multimask_outputs)
    gen = seeded(7)
    image = SamDecoderImage(sam).eval()
    shared = _image_feeds(image, randn((1, c, g, g), gen))
    other = _image_feeds(image, randn((1, c, g, g), gen))
    return Prepared(
        module=SamDecoderShared(sam, scale_first, token_upscaling, folded).eval(),
        inputs=(
            *_shared_specs(sam),
            TensorSpec("point_coords", "float32", ("batch", "num_points", 2), allow_float64=True),
            TensorSpec("point_labels", "float32", ("batch", "num_points"), allow_float64=True),
        ),
        outputs=(
            TensorSpec("low_res_masks", "float32", ("batch", k, 4 * g, 4 * g)),
            TensorSpec("iou_predictions", "float32", ("batch", k)),
        ),
        dummy={**shared, **_point_feeds(gen, 5, 2, s)},
        validation=[{**other, **_point_feeds(gen, 1, 1, s)}, {**shared, **_point_feeds(gen, 7, 3, s)}],
        tolerances={"low_res_masks": _TOL, "iou_predictions": _TOL},
        profiles=PROMPT_PROFILES,
        options={"scale_first": scale_first, "token_upscaling": token_upscaling, "folded": folded},
        metadata={**decoder_metadata(sam, s, g), "pairs_with": "sam_decoder_image"},
    )


SAM_DECODER_IMAGE = ExportSpec(
    "sam_decoder_image",
    "sam",
    "SAM decoder, per-image part: (1,C,g,g) embedding → first block's prompt-independent tensors",
    prepare_decoder_image,
    exporter="legacy",
    exporter_reason="legacy: same exporter as sam_decoder_shared, which it feeds",
)

SAM_DECODER_SHARED = ExportSpec(
    "sam_decoder_shared",
    "sam",
    "SAM decoder for AMG on shared per-image tensors: B prompt sets → (B,3,4g,4g) logits, (B,3) IoU",
    prepare_decoder_shared,
    exporter="legacy",
    exporter_reason="legacy: 20x faster export than dynamo for the decoder, same parity",
)
