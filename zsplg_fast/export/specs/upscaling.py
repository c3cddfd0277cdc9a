"""The mask decoders' output upscaling in token layout, for the exported graphs (SAM and SAM 2).

Upstream (segment-anything ``modeling/mask_decoder.py`` and sam2 ``modeling/sam/mask_decoder.py``
``predict_masks``) upscales the image tokens per prompt with
``ConvTranspose2d(C, C/4, 2, 2) → LayerNorm2d → GELU → ConvTranspose2d(C/4, C/8, 2, 2) → GELU`` on an
NCHW grid (SAM 2 adds its two high-resolution feature maps before the LayerNorm and before the second
GELU), then multiplies by the hypernetwork vectors. onnxruntime's CPU ConvTranspose and the decomposed
LayerNorm2d (mean/sub/pow/sqrt/div over the channel axis of NCHW) are slow kernels, and the
NCHW↔token transposes move the largest tensors of the decoder.

A transposed convolution with kernel = stride = 2 (no padding, no overlap) writes each input pixel's
four output pixels independently: ``out[co, 2i+a, 2j+b] = Σ_ci x[ci, i, j] · w[ci, co, a, b] + bias[co]``.
That is one MatMul of the (h·w, C_in) tokens by a (C_in, 4·C_out) matrix whose columns are ordered
(a, b, co); reading its output as (h·w·4, C_out) keeps the channel axis last. So here:

- the image tokens (B, h·w, C) stay in token layout: two MatMuls (+ bias), a LayerNormalization over
  the last (channel) axis (one onnxruntime kernel), GELU (fused by onnxruntime), no ConvTranspose;
- rows end in the order (i, j, a, b, a', b'): pixel (4i + 2a + a', 4j + 2b + b') of the 4h×4w grid;
  SAM 2's feature maps are permuted into that order once per call (batch 1), not per prompt;
- the hypernetwork product runs on the (B, 16·h·w, C/8) rows, and only its (B, K, 16·h·w) result
  (K = 3 or 4 masks) is permuted back to (B, K, 4h, 4w).

Same arithmetic as upstream's modules up to the order of the sums (last-bit differences; the exports
are validated against the modules with the specs' fatal tolerances, and tests compare with upstream).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def deconv_as_matmul(conv: nn.ConvTranspose2d) -> tuple[torch.Tensor, torch.Tensor]:
    """A ``ConvTranspose2d(C_in, C_out, 2, stride=2)`` → its (C_in, 4·C_out) matrix and (4·C_out,) bias,
    columns in (a, b, co) order (output pixel (2i + a, 2j + b), channel co).

    Raises:
        ValueError: any other transposed convolution (kernel or stride not 2, padding, groups, dilation).
    """
    if (
        tuple(conv.kernel_size) != (2, 2)
        or tuple(conv.stride) != (2, 2)
        or tuple(conv.padding) != (0, 0)
        or tuple(conv.output_padding) != (0, 0)
        or tuple(conv.dilation) != (1, 1)
        or conv.groups != 1
    ):
        raise ValueError(f"token-layout upscaling needs ConvTranspose2d(k=2, s=2, no padding/groups): {conv}")
    c_in, c_out = int(conv.in_channels), int(conv.out_channels)
    weight = conv.weight.permute(0, 2, 3, 1).reshape(c_in, 4 * c_out)
    bias = conv.bias if conv.bias is not None else conv.weight.new_zeros(c_out)
    return weight, bias.repeat(4)


def _deconv(conv: nn.ConvTranspose2d, x: torch.Tensor) -> torch.Tensor:
    """(B, n, C_in) rows → (B, 4·n, C_out) rows of ``conv`` (a row's four output pixels, (a, b) order)."""
    weight, bias = deconv_as_matmul(conv)
    # 2-D: onnxruntime fuses MatMul + Add into one Gemm (bias in the GEMM) only on 2-D inputs. Written as
    # MatMul + Add, not addmm (an ONNX Gemm): the int8 op lists (export/precision.py) name Gemm for the
    # decoders' small MLP heads, and these weights were a ConvTranspose, never quantized.
    y = torch.matmul(x.reshape(-1, int(conv.in_channels)), weight) + bias
    return y.reshape(x.shape[0], -1, int(conv.out_channels))


def _channel_norm(norm: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Upstream's ``LayerNorm2d`` (mean/var over channels, eps, affine) on channel-last rows (B, n, C)."""
    return F.layer_norm(x, (int(norm.weight.shape[0]),), norm.weight, norm.bias, float(norm.eps))


def grid_to_rows(feat: torch.Tensor, levels: int) -> torch.Tensor:
    """(b, C, 2^L·h, 2^L·w) NCHW map → (b, 4^L·h·w, C) rows in the upscaling's order (L = ``levels``,
    1 or 2): (i, j, a, b) for L = 1, (i, j, a, b, a', b') for L = 2. NCHW → NHWC first (one axis
    moves: a fast transpose), then the pixels' blocks move with their C channels contiguous (onnxruntime
    CPU, (1, 32, 256, 256): 7.7 ms against 12.7 ms for one element-wise 8-D transpose)."""
    b, c, hh, ww = feat.shape
    s = 1 << levels
    h, w = hh // s, ww // s
    x = feat.permute(0, 2, 3, 1)  # (b, 2^L·h, 2^L·w, C)
    if levels == 1:  # (i, a, j, b, c) → (i, j, a, b, c)
        x = x.reshape(b, h, 2, w, 2, c).permute(0, 1, 3, 2, 4, 5)
    else:  # (i, a, a', j, b, b', c) → (i, j, a, b, a', b', c)
        x = x.reshape(b, h, 2, 2, w, 2, 2, c).permute(0, 1, 4, 2, 5, 3, 6, 7)
    return x.reshape(b, s * s * h * w, c)


def grid_from_rows(masks: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """(B, K, 16·h·w) with the last axis in (i, j, a, b, a', b') order → (B, K, 4h, 4w), pixel
    (4i+2a+a', 4j+2b+b') (onnxruntime CPU, B = 16, K = 4, 64×64: 26 ms against 49 ms for the same
    permutation from (B, 16·h·w, K))."""
    b, k = masks.shape[0], masks.shape[1]
    x = masks.reshape(b * k, h, w, 2, 2, 2, 2).permute(0, 1, 3, 5, 2, 4, 6)
    return x.reshape(b, k, 4 * h, 4 * w)


def upscale_rows(
    upscaling: nn.Sequential,
    tokens: torch.Tensor,
    high_res: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> torch.Tensor:
    """``output_upscaling`` on image tokens in token layout.

    Args:
        upscaling: upstream's ``Sequential(ConvT, LayerNorm2d, act, ConvT, act)``.
        tokens: (B, h·w, C) float image tokens, row-major over the h×w grid (the transformer's ``keys``).
        high_res: SAM 2's (feat_s0 (b, C/8, 4h, 4w), feat_s1 (b, C/4, 2h, 2w)) with b = 1 or B, added
            as upstream's ``predict_masks`` does (``use_high_res_features``); None for SAM.
    Returns:
        (B, 16·h·w, C/8) rows in (i, j, a, b, a', b') order (see :func:`grid_from_rows`).
    """
    dc1, ln1, act1, dc2, act2 = upscaling
    x = _deconv(dc1, tokens)
    if high_res is not None:
        x = x + grid_to_rows(high_res[1], 1)
    x = _deconv(dc2, act1(_channel_norm(ln1, x)))
    if high_res is not None:
        x = x + grid_to_rows(high_res[0], 2)
    return act2(x)


def masks_from_rows(hyper: torch.Tensor, rows: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """Hypernetwork vectors (B, K, C/8) · upscaled rows (B, 16·h·w, C/8) → (B, K, 4h, 4w) logits (the
    ``hyper_in @ upscaled`` of upstream's ``predict_masks``)."""
    return grid_from_rows(torch.matmul(hyper, rows.transpose(1, 2)), h, w)
