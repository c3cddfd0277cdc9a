"""SAM's decoder attention with the scale applied to Q before Q·Kᵀ, for the exported decoders.

Upstream (segment-anything ``modeling/transformer.py`` ``Attention.forward``) computes
``softmax((q @ kᵀ) / sqrt(d)) @ v``. TensorRT's multi-head-attention fusion matches the pattern
``MatMul(Q·s, Kᵀ) → Softmax → MatMul(·, V)`` (scale on Q, or on K, before the first MatMul: the form
PyTorch's ``scaled_dot_product_attention`` exports), not a ``Div`` between the MatMul and the Softmax.
``(q · s) @ kᵀ`` equals ``(q @ kᵀ) · s`` up to rounding (parity against upstream is tested).

:func:`scale_before_qk` swaps ``Attention.forward`` for :func:`scale_first_forward` while an exported
decoder module runs (tracing, export validation); the labeler's own torch modules keep upstream's order.
"""

from __future__ import annotations

import contextlib
import math
import threading
from collections.abc import Callable, Iterator

import torch
from segment_anything.modeling.transformer import Attention

_LOCK = threading.RLock()


def separate_heads(x: torch.Tensor, n: int) -> torch.Tensor:
    """(b, t, c) → (b, n, t, c/n), as upstream ``Attention._separate_heads``."""
    return x.reshape(x.shape[0], x.shape[1], n, x.shape[2] // n).transpose(1, 2)


def scale_first_forward(self: Attention, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Upstream ``Attention.forward`` with Q scaled by 1/sqrt(d) before Q·Kᵀ (sam2's: the same without
    ``scaled_dot_product_attention``; no dropout at inference). q (B, Tq, C), k/v (B, Tk, C) → (B, Tq, C)."""
    q = self._separate_heads(self.q_proj(q), self.num_heads)
    k = self._separate_heads(self.k_proj(k), self.num_heads)
    v = self._separate_heads(self.v_proj(v), self.num_heads)
    q = q * (1.0 / math.sqrt(q.shape[-1]))
    attn = torch.softmax(q @ k.permute(0, 1, 3, 2), dim=-1)
    return self.out_proj(self._recombine_heads(attn @ v))


@contextlib.contextmanager
def scale_before_qk(enabled: bool = True, attention: type = Attention) -> Iterator[None]:
    """Run the ``attention`` class's modules (SAM's ``Attention`` by default; sam2's ``Attention``, which
    has the same projections and head helpers but calls ``scaled_dot_product_attention``, whose export
    scales Q AND K by √s and transposes K apart) with :func:`scale_first_forward` inside the block
    (re-entrant)."""
    if not enabled:
        yield
        return
    with swapped_forward(attention, scale_first_forward):
        yield


@contextlib.contextmanager
def swapped_forward(attention: type, forward: Callable[..., torch.Tensor]) -> Iterator[None]:
    """``attention.forward`` = ``forward`` inside the block, under one re-entrant lock (the class is
    shared by every module of the process: a concurrent export must not see another's form)."""
    with _LOCK:
        original = attention.forward
        attention.forward = forward  # type: ignore[method-assign]
        try:
            yield
        finally:
            attention.forward = original  # type: ignore[method-assign]
