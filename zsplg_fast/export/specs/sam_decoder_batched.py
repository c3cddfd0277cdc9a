"""``sam_decoder_batched``: B prompt sets against ONE image embedding, for automatic mask generation.

Inputs: ``image_embeddings`` (1, C, g, g) float32 (the encoder's output for one image),
``point_coords`` (B, N, 2) float32 in the resized S-frame (``ResizeLongestSide.apply_coords``, what
``SamAutomaticMaskGenerator`` feeds ``predict_torch``), ``point_labels`` (B, N) float32 in {0, 1}
(-1 = ignore). The graph appends the padding point ((0, 0), label -1) itself, exactly as
``PromptEncoder`` does when no box is given — do not pad.
Outputs: ``low_res_masks`` (B, 3, 4g, 4g) float32 logits (multimask tokens 1..3; threshold 0.0 after
upsampling, upsampling stays outside) and ``iou_predictions`` (B, 3) float32.

Speed: the mask decoder runs once for all B. The embedding is never tiled: ``src`` = embedding +
no-mask embedding is computed once at batch 1 and the two-way transformer's first block broadcasts it
(its keys, key projections and image→token queries are shared by all B); the single-mask token's
hypernetwork is skipped. Numerically the same as ``PromptEncoder`` + ``MaskDecoder(multimask_output=True)``
(follows segment-anything ``mask_decoder.py`` ``predict_masks`` and ``utils/onnx.py`` ``_embed_points``).
"""

from __future__ import annotations

import torch
from segment_anything.modeling import Sam
from torch import nn

from zsplg_fast.export.specs.attention import scale_before_qk
from zsplg_fast.export.specs.base import ExportSpec, Prepared, rand, randn, seeded
from zsplg_fast.export.specs.upscaling import masks_from_rows, upscale_rows
from zsplg_fast.export.tensors import AxisRange, TensorSpec, Tolerance
from zsplg_fast.models import sam_info


class SamDecoderBatched(nn.Module):
    """(1,C,g,g) embedding + B prompt sets → (B,3,4g,4g) low-res logits and (B,3) IoU predictions."""

    def __init__(self, sam: Sam, scale_first: bool = False, token_upscaling: bool = False) -> None:
        super().__init__()
        self.prompt_encoder = sam.prompt_encoder
        self.mask_decoder = sam.mask_decoder
        self.img_size = int(sam.image_encoder.img_size)
        self.scale_first = scale_first  # exported: attention scale on Q before Q·Kᵀ (attention.py)
        # exported: upscaling as MatMuls on token rows, no ConvTranspose (upscaling.py); off = upstream's
        self.token_upscaling = token_upscaling

    def embed_points(self, coords: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """(B, N, 2), (B, N) → (B, N+1, C) sparse embeddings, padding point appended.

        Arithmetic masks instead of boolean indexing so tracing keeps B and N symbolic
        (as upstream ``SamOnnxModel._embed_points``).
        """
        pe = self.prompt_encoder
        coords = torch.cat([coords, torch.zeros_like(coords[:, :1])], dim=1) + 0.5
        labels = torch.cat([labels, -torch.ones_like(labels[:, :1])], dim=1).unsqueeze(-1)
        emb = pe.pe_layer._pe_encoding(coords / self.img_size)
        emb = emb * (labels != -1) + pe.not_a_point_embed.weight * (labels == -1)
        for i in range(pe.num_point_embeddings):
            emb = emb + pe.point_embeddings[i].weight * (labels == i)
        return emb

    def forward(
        self, image_embeddings: torch.Tensor, point_coords: torch.Tensor, point_labels: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        md = self.mask_decoder
        sparse = self.embed_points(point_coords, point_labels)
        b = sparse.shape[0]
        out_tokens = torch.cat([md.iou_token.weight, md.mask_tokens.weight], dim=0)
        tokens = torch.cat([out_tokens.unsqueeze(0).expand(b, -1, -1), sparse], dim=1)
        src = image_embeddings + self.prompt_encoder.no_mask_embed.weight.reshape(1, -1, 1, 1)
        with scale_before_qk(self.scale_first):
            hs, keys = md.transformer(src, self.prompt_encoder.get_dense_pe(), tokens)  # keys: (B, g², C)
        return self.heads(hs, keys, src.shape[2], src.shape[3])

    def heads(
        self, hs: torch.Tensor, keys: torch.Tensor, h: int, w: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Transformer outputs → masks and IoU: ``hs`` (B, T, C) tokens, ``keys`` (B, h*w, C) image tokens
        → (B, 3, 4h, 4w) logits of the multimask tokens, (B, 3) their IoU predictions."""
        md = self.mask_decoder
        b, c = keys.shape[0], keys.shape[2]
        if self.token_upscaling:
            upscaled = upscale_rows(md.output_upscaling, keys)  # (B, 16·h·w, C/8) rows
        else:
            upscaled = md.output_upscaling(keys.transpose(1, 2).reshape(b, c, h, w))
        kind = keys.device.type
        if torch.is_autocast_enabled(kind):
            # bf16 autocast: the mask logits (hypernetwork · upscaled features, thresholded at 0) and the
            # IoU head in fp32. Measured on the toy SAM + CLIP (2 val images, 16×16, thresholds 0): AMG
            # mean best IoU vs upstream 0.9796 → 0.9856; decoder compute is unchanged (tiny MLPs, one bmm).
            with torch.autocast(kind, enabled=False):
                return self._masks_and_iou(hs.float(), upscaled.float(), h, w)
        return self._masks_and_iou(hs, upscaled, h, w)

    def _masks_and_iou(
        self, hs: torch.Tensor, upscaled: torch.Tensor, h: int, w: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        md = self.mask_decoder
        hyper = torch.stack(
            [md.output_hypernetworks_mlps[i](hs[:, 1 + i, :]) for i in range(1, md.num_mask_tokens)], dim=1
        )
        if self.token_upscaling:
            masks = masks_from_rows(hyper, upscaled, h, w)
        else:
            b, cu, hu, wu = upscaled.shape
            masks = (hyper @ upscaled.reshape(b, cu, hu * wu)).reshape(b, -1, hu, wu)
        iou = md.iou_prediction_head(hs[:, 0, :])[:, 1:]
        return masks, iou


def _feeds(gen: torch.Generator, b: int, n: int, c: int, g: int, s: int, emb: torch.Tensor) -> dict:
    return {
        "image_embeddings": emb,
        "point_coords": rand((b, n, 2), gen, float(s)),
        "point_labels": torch.randint(0, 2, (b, n), generator=gen).to(torch.float32),
    }


def prepare_decoder_batched(sam: Sam, scale_first: bool = True, token_upscaling: bool = True) -> Prepared:
    """Bind ``sam_decoder_batched`` to ``sam``: dummy B=5, N=2; validation (1, 1) and (7, 3).
    ``scale_first`` / ``token_upscaling``: the exported forms (attention.py, upscaling.py; the defaults),
    False = upstream's."""
    info = sam_info(sam)
    s, g, c = info.img_size, info.embedding_size, info.prompt_embed_dim
    k = int(sam.mask_decoder.num_multimask_outputs)
    gen = seeded(3)
    emb = randn((1, c, g, g), gen)
    tol = Tolerance(atol=1e-4, rtol=1e-4, min_cosine=0.99999)
    return Prepared(
        module=SamDecoderBatched(sam, scale_first, token_upscaling).eval(),
        inputs=(
            TensorSpec("image_embeddings", "float32", (1, c, g, g)),
            TensorSpec("point_coords", "float32", ("batch", "num_points", 2), allow_float64=True),
            TensorSpec("point_labels", "float32", ("batch", "num_points"), allow_float64=True),
        ),
        outputs=(
            TensorSpec("low_res_masks", "float32", ("batch", k, 4 * g, 4 * g)),
            TensorSpec("iou_predictions", "float32", ("batch", k)),
        ),
        dummy=_feeds(gen, 5, 2, c, g, s, emb),
        validation=[_feeds(gen, 1, 1, c, g, s, randn((1, c, g, g), gen)), _feeds(gen, 7, 3, c, g, s, emb)],
        tolerances={"low_res_masks": tol, "iou_predictions": tol},
        profiles=PROMPT_PROFILES,
        options={"scale_first": scale_first, "token_upscaling": token_upscaling},
        metadata=decoder_metadata(sam, s, g),
    )


# TensorRT min/opt/max of the prompt axes, shared by every batched-prompt decoder spec. The labeler sends
# its prompts in batches capped at the plan's max (amg_ops.engine_max_batch): on a GPU that cap is what it
# sends (default_prompt_batch is >= 256 with a few GB free), so the plan is tuned there (opt = max).
# ``num_points`` is 1 from the AMG (the graph appends the padding point).
PROMPT_PROFILES = {"batch": AxisRange(1, 256, 256), "num_points": AxisRange(1, 1, 4)}
PROMPT_DECODERS = ("sam_decoder_batched", "sam_decoder_shared", "sam2_decoder_batched")
"""Specs whose ``batch`` axis is the prompt batch (``export.decoder_max_batch`` sets its max): SAM's
one-piece and shared decoders, and SAM 2's batched decoder (its ``batch`` also sizes ``mask_input``, the
m2m pass's mask prompts)."""


def decoder_metadata(sam: Sam, s: int, g: int) -> dict:
    """Sidecar facts of a batched-prompt decoder: coordinate frame, mask threshold, sizes."""
    return {
        "coords_frame": f"ResizeLongestSide({s}).apply_coords; the graph appends the padding point",
        "mask_threshold": float(sam.mask_threshold),
        "low_res_size": 4 * g,
        "input_size": s,
    }


SAM_DECODER_BATCHED = ExportSpec(
    "sam_decoder_batched",
    "sam",
    "SAM decoder for AMG: one (1,C,g,g) embedding, B prompt sets → (B,3,4g,4g) logits, (B,3) IoU",
    prepare_decoder_batched,
    exporter="legacy",
    exporter_reason="legacy: 20x faster export than dynamo for the decoder, same parity",
)
