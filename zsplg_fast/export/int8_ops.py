"""int8 op types per artifact spec: which ONNX op types static (QDQ) and dynamic int8 quantize.

A leaf module (no zsplg_fast imports beyond int8's defaults) so that both the static path
(:mod:`zsplg_fast.export.precision`) and the dynamic ``onnx-int8`` format (:mod:`zsplg_fast.export.quantize`)
read the same measured lists.
"""

from __future__ import annotations

from zsplg_fast.export.int8 import QUANT_OP_TYPES

# int8 op types of every spec (a test fails when a registered spec has no entry). Attention's
# activation x activation MatMuls are never quantized (int8.py); these lists narrow the rest where the
# default cost label accuracy (measured):
# SAM's batched decoder: quantizing its two-way transformer's MatMuls cost 2.4 label-mIoU points on 24
# toy-world images (toy SAM+CLIP, int8 decoder alone, mask fidelity 0.94); with Conv/Gemm only (its MLP
# heads) +0.06 points, fidelity 0.990. The transformer stays fp32 (TensorRT runs each layer in its
# graph type). sam_decoder, sam_decoder_image and sam_decoder_shared hold the same transformer, so the
# same rule: sam_decoder_image is the first block's k/v/q projections only (exported as Gemm on its
# batch-1 tokens: "Conv, Gemm" quantized 15 Q/DQ into them), so nothing in it is quantized (its int8
# ONNX is its fp32 graph, recorded with qdq_nodes 0).
# GEM dense CLIP (toy CLIP, int8 clip_dense alone, same images): Conv/MatMul/Gemm -0.63 points,
# Conv/Gemm only -7.3, MatMul only 0.00 (the patch-embedding Conv and the Gemm projections are the
# sensitive ones); so MatMul only, and the text tower (the same blocks) likewise.
# segmenter (a CNN), TensorRT form (symmetric int8 activations): Conv (the default list); quantizing the
# ReLU / residual Add / MaxPool / Concat between them too cost 0.92 mIoU points on the toy segmenter
# (bench/results/deploy_cpu, row int8), against 0.21 for Conv only (the earlier committed run).
# onnxruntime CPU form (uint8 activations, INT8_CPU_OP_TYPES): the CNN end to end, so onnxruntime fuses
# the whole backbone into QLinearConv / QLinearAdd (Conv alone leaves float ReLUs and Adds between
# int8 Convs, slower than fp32 there); toy drop -0.02 points. Slice and Pad: the tap convs that
# export/int8_dilated.py splits the ASPP's dilated convs into read a Slice and write through a Pad; both
# quantized, onnxruntime runs them on uint8 (no float island between the tap convs and their Adds).
SEGMENTER_INT8_OPS = ("Conv", "Relu", "Add", "MaxPool", "Concat", "Slice", "Pad")
INT8_CPU_OP_TYPES: dict[str, tuple[str, ...]] = {"segmenter": SEGMENTER_INT8_OPS}
INT8_OP_TYPES: dict[str, tuple[str, ...]] = {
    "sam_encoder": QUANT_OP_TYPES,
    "sam_encoder_preprocess": (),  # resize + normalise: no weights, nothing to quantize
    "sam_decoder": ("Conv", "Gemm"),
    "sam_decoder_batched": ("Conv", "Gemm"),
    "sam_decoder_image": (),  # transformer projections only
    "sam_decoder_shared": ("Conv", "Gemm"),
    # SAM 2's decoders: the same two-way transformer + MLP heads as SAM's, so SAM's choice (not measured
    # on SAM 2: no trained SAM 2 toy model exists here)
    "sam2_encoder": QUANT_OP_TYPES,  # Hiera + FPN: the weight layers, as SAM's encoder (not measured)
    "sam2_decoder": ("Conv", "Gemm"),
    "sam2_decoder_batched": ("Conv", "Gemm"),
    "clip_dense": ("MatMul",),
    "clip_text": ("MatMul",),
    "segmenter": QUANT_OP_TYPES,
}


def int8_op_types(spec: str | None, target: str = "tensorrt") -> tuple[str, ...]:
    """The int8 op types of an artifact's spec for an int8 target (:data:`INT8_OP_TYPES`, for ``cpu``
    :data:`INT8_CPU_OP_TYPES` first); a sidecar without a registered spec (a hand-made ONNX) gets the
    default Conv/MatMul/Gemm."""
    key = str(spec or "")
    if target == "cpu" and key in INT8_CPU_OP_TYPES:
        return INT8_CPU_OP_TYPES[key]
    return INT8_OP_TYPES.get(key, QUANT_OP_TYPES)
