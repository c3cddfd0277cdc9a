"""Folded cross attention for the exported AMG decoders (``decoder_attention: folded``, onnxruntime CPU).

SAM's and SAM 2's ``TwoWayTransformer`` (segment-anything ``modeling/transformer.py``, sam2
``modeling/sam/transformer.py``: the same blocks) attend between T ≈ 7 prompt tokens and g² = 4096 image
tokens, per prompt. Upstream projects the 4096 image tokens of every prompt (k/v projections for
token→image, the q projection and the out projection for image→token): 4 · 4096 · 256 · 128 MACs per
attention. Because the heads are linear, the projections can move to the small side instead:

- token→image (Tq small, Tk = g² per prompt): ``q_h · (W_k,h x + b_k,h)`` = ``(q_h W_k,h) · x`` + a
  constant per query row, which softmax drops; ``A_h (W_v,h x + b_v,h)`` = ``(A_h x) W_v,hᵀ + b_v,h``
  (softmax rows sum to 1). The image tokens are contracted with (H·Tq, C) matrices, never projected.
- image→token (Tq = g² per prompt, Tk small): ``(W_q,h x + b_q,h) · k_h`` = ``x · (W_q,hᵀ k_h)`` +
  ``b_q,h · k_h``, and the out projection folds into the values: ``Σ_h A_h (v_h W_o,h + b_o / H)``.

Per prompt and attention: 2 · 4096 · 256 · (H·T = 56) MACs instead of about 2 · 4096 · 256 · 128 — SAM
vit_b's decoder goes from about 1.36 to 0.81 GMAC per prompt (the mask upscaling is the rest). It is the
same function up to float rounding (tests: against upstream at 1e-4). It is NOT TensorRT's
multi-head-attention pattern (``MatMul(Q·s, Kᵀ) → Softmax → MatMul(·, V)``, attention.py), so exports
for TensorRT keep ``decoder_attention: fused``.

An image side shared by all prompts at batch 1 (``sam_decoder_shared``'s and SAM 2 ``share_image``'s
first block) keeps upstream's projections: they run once per call, which is cheaper than any fold.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterable, Iterator

import torch
from segment_anything.modeling.transformer import Attention

from zsplg_fast.export.specs.attention import scale_first_forward, separate_heads, swapped_forward


def attend_image_keys(attn: Attention, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Token→image attention with the k/v projections folded into the queries.

    q (B, Tq, C) float32 (prompt tokens + pe), k (B, Tk, C) (image tokens + pe), v (B, Tk, C) (image tokens)
    → (B, Tq, C) after ``out_proj``; Tk ≫ Tq. Equals upstream ``Attention.forward`` up to rounding."""
    n = attn.num_heads
    b, tq = q.shape[0], q.shape[1]
    qh = separate_heads(attn.q_proj(q), n)  # (B, H, Tq, d)
    d = qh.shape[-1]
    qh = qh * (1.0 / math.sqrt(d))
    w_k = attn.k_proj.weight.reshape(n, d, -1)  # (H, d, C): head h of W_k
    qk = (qh @ w_k).reshape(b, n * tq, -1)  # (B, H·Tq, C); q_h · b_k,h is constant per row: dropped
    logits = (k @ qk.transpose(1, 2)).transpose(1, 2)  # (B, H·Tq, Tk): image tokens stay untransposed
    av = (torch.softmax(logits, dim=-1) @ v).reshape(b, n, tq, -1)  # (B, H, Tq, C)
    w_v = attn.v_proj.weight.reshape(n, d, -1)
    out = av @ w_v.transpose(1, 2) + attn.v_proj.bias.reshape(n, 1, d)  # (B, H, Tq, d)
    return attn.out_proj(out.transpose(1, 2).reshape(b, tq, n * d))


def attend_to_tokens(
    attn: Attention, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, q_projected: bool = False
) -> torch.Tensor:
    """Image→token attention with the q projection (unless ``q_projected``) and the out projection folded
    into the token side.

    q (Bq, Tq, C) image tokens + pe (or, ``q_projected``, ``q_proj`` of them: (Bq, Tq, Ci)), k (B, Tk, C)
    prompt tokens + pe, v (B, Tk, C) prompt tokens; Bq is B or 1 (an image side shared by the prompts)
    → (B, Tq, C). Equals upstream ``Attention.forward`` up to rounding."""
    n = attn.num_heads
    bk, tk = k.shape[0], k.shape[1]
    kh = separate_heads(attn.k_proj(k), n)  # (B, H, Tk, d)
    d = kh.shape[-1]
    kh = kh * (1.0 / math.sqrt(d))
    if q_projected:  # (Bq, H, Tq, d) @ (B, H, d, Tk) → (B, Tq, H·Tk)
        logits = (separate_heads(q, n) @ kh.transpose(2, 3)).permute(0, 2, 1, 3)
        logits = logits.reshape(logits.shape[0], logits.shape[1], n * tk)
    else:
        w_q = attn.q_proj.weight.reshape(n, d, -1).transpose(1, 2)  # (H, C, d)
        m = (w_q @ kh.transpose(2, 3)).permute(0, 2, 1, 3).reshape(bk, -1, n * tk)  # (B, C, H·Tk)
        bias = (attn.q_proj.bias.reshape(n, 1, d) @ kh.transpose(2, 3)).reshape(bk, 1, n * tk)
        logits = q @ m + bias  # (B, Tq, H·Tk)
    tq = logits.shape[1]
    a = torch.softmax(logits.reshape(-1, tq, n, tk), dim=-1).reshape(-1, tq, n * tk)
    w_o = attn.out_proj.weight.reshape(-1, n, d).permute(1, 2, 0)  # (H, d, C): head h's columns of W_o
    # b_o / H on every value row: each head's softmax row sums to 1, so a @ (vo + b_o / H) = a @ vo + b_o
    # (no bias Add over the (B, Tq, C) output)
    vo = separate_heads(attn.v_proj(v), n) @ w_o + attn.out_proj.bias * (1.0 / n)  # (B, H, Tk, C)
    return a @ vo.reshape(bk, n * tk, -1)


_SHARED: set[int] = set()
"""ids of the attention modules whose image side is one map shared by all prompts (set by
:func:`folded_attention` while it holds the lock)."""


def folded_forward(self: Attention, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """``Attention.forward`` that folds by role: the side with more tokens (g² image tokens against the
    prompt tokens; fixed per graph, traced once) is the image side. A module named ``shared`` in
    :func:`folded_attention` has a batch-1 image side: token→image keeps upstream's projections (once
    per call), image→token projects its queries once and folds the rest. Self-attention among the
    prompt tokens keeps :func:`scale_first_forward`."""
    tq, tk = q.shape[1], k.shape[1]
    shared = id(self) in _SHARED
    if tk > tq and not shared:
        return attend_image_keys(self, q, k, v)
    if tq > tk:
        if shared:
            return attend_to_tokens(self, self.q_proj(q), k, v, q_projected=True)
        return attend_to_tokens(self, q, k, v)
    return scale_first_forward(self, q, k, v)


@contextlib.contextmanager
def folded_attention(
    enabled: bool = True, attention: type = Attention, shared: Iterable[torch.nn.Module] = ()
) -> Iterator[None]:
    """Run the ``attention`` class's modules (SAM's ``Attention`` or sam2's, same projections) with
    :func:`folded_forward` inside the block (nests inside ``scale_before_qk``). ``shared``: attention
    modules whose image side is a batch-1 map for every prompt (SAM 2's first block with ``share_image``).
    """
    if not enabled:
        yield
        return
    with swapped_forward(attention, folded_forward):
        before = set(_SHARED)
        _SHARED.update(id(m) for m in shared)
        try:
            yield
        finally:
            _SHARED.intersection_update(before)
