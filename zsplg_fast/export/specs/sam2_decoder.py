"""``sam2_decoder`` and ``sam2_decoder_batched``: SAM 2's prompt encoder + mask decoder.

Both follow sam2 ``SAM2ImagePredictor._predict``: points in the S-frame (``SAM2Transforms.transform_coords``
with ``normalize=True``: x / W · S, y / H · S; the image was resized to S×S, not letterboxed), the
prompt encoder always appends the padding point (label -1; the graph does it, do not pad), the mask
prompt through ``mask_downscaling`` or the no-mask embedding, then ``MaskDecoder.predict_masks`` with
the two high-resolution feature maps of ``sam2_encoder``.

- ``sam2_decoder`` (the point interface, one prompt set): ``image_embed`` (1, C, g, g),
  ``high_res_feats_0`` (1, C/8, 4g, 4g), ``high_res_feats_1`` (1, C/4, 2g, 2g), ``point_coords``
  (1, N, 2), ``point_labels`` (1, N) in {0, 1, 2, 3} (2/3 = box corners), ``mask_input`` (1, 1, 4g, 4g)
  logits, ``has_mask_input`` (1,) in {0, 1}, ``orig_im_size`` (2,) = (H, W) → ``masks`` (1, M, H, W)
  logits (bilinear from the low-res logits, as ``SAM2Transforms.postprocess_masks``),
  ``iou_predictions`` (1, M), ``low_res_masks`` (1, M, 4g, 4g) clamped to ±32 as the predictor returns
  them. M = 3 (``multimask_output``, default) or 1 (the decoder's dynamic multimask via stability).
- ``sam2_decoder_batched`` (AMG prompt batches, ``SAM2AutomaticMaskGenerator``): the same per-image
  inputs at batch 1, B prompt sets ``point_coords`` (B, N, 2), ``point_labels`` (B, N), ``mask_input``
  (B, 1, 4g, 4g) with ``has_mask_input`` (1,) (0: zeros are ignored; 1: the m2m refinement step) →
  ``low_res_masks`` (B, 4, 4g, 4g) unclamped logits of ALL mask tokens and ``iou_predictions`` (B, 4).
  The caller selects: tokens 1..3 (``multimask_output``) or ``dynamic_multimask`` (sam2_select.py;
  single mask); its delta and threshold are in the sidecar.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from zsplg_fast.export.specs.attention import scale_before_qk
from zsplg_fast.export.specs.base import ExportSpec, Prepared, rand, randn, seeded
from zsplg_fast.export.specs.folded import folded_attention
from zsplg_fast.export.specs.sam2_encoder import encoder_output_specs
from zsplg_fast.export.specs.sam2_select import dynamic_multimask
from zsplg_fast.export.specs.upscaling import masks_from_rows, upscale_rows
from zsplg_fast.export.tensors import AxisRange, TensorSpec, Tolerance
from zsplg_fast.models.sam2 import sam2_info

_TOL = Tolerance(atol=1e-4, rtol=1e-4, min_cosine=0.99999)


class Sam2PromptDecoder(nn.Module):
    """The per-prompt work shared by both specs: (all-token) low-res logits and IoU of B prompt sets.

    ``share_image``: do not tile the image embedding per prompt (upstream ``predict_masks`` repeats it B
    times); the two-way transformer's first block then computes its image-side projections once and
    broadcasts them (as ``sam_decoder_batched`` does for SAM) when the dense prompt is one map (the
    ignored mask prompt fed at batch 1). Measured on Hiera-T, 16 prompts, one CPU thread: 5.55 → 3.82 s
    (1.45×); max abs difference to upstream 1.1e-6 (not bit-equal: batch-1 GEMMs round differently).
    On in the exported artifacts (onnxruntime is not bit-equal to torch anyway; the exports are
    validated with the fatal tolerances) and under bf16 / fp16 autocast; off in the torch labeler at fp32.
    """

    def __init__(
        self,
        model: nn.Module,
        share_image: bool = False,
        token_upscaling: bool = False,
        scale_first: bool = False,
        folded: bool = False,
    ) -> None:
        super().__init__()
        self.prompt_encoder = model.sam_prompt_encoder
        self.mask_decoder = model.sam_mask_decoder
        # a structured stand-in without a two-way transformer keeps its own predict_masks
        real = hasattr(self.mask_decoder, "transformer")
        self.share_image = share_image and real
        # exported: the upscaling as MatMuls on token rows, no ConvTranspose (upscaling.py)
        self.token_upscaling = token_upscaling and real
        # exported: the attention scale on Q only, before Q·Kᵀ (attention.py), not SDPA's √s on Q and K
        self.scale_first = scale_first and real
        # exported for onnxruntime CPU: cross-attention projections folded to the token side (folded.py)
        self.folded = folded and real

    def forward_all(self, *feeds: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`all_tokens` in the attention order of ``scale_first`` / ``folded``."""
        if not (self.scale_first or self.folded):
            return self.all_tokens(*feeds)
        tr = self.mask_decoder.transformer
        attention = type(tr.final_attn_token_to_image)  # sam2's Attention
        first = tr.layers[0]
        # share_image: block 1's image side is one map (the ignored mask prompt at batch 1, AMG's first
        # pass): projected once per call, not folded per prompt
        shared = (
            (first.cross_attn_token_to_image, first.cross_attn_image_to_token) if self.share_image else ()
        )
        with scale_before_qk(self.scale_first, attention), folded_attention(self.folded, attention, shared):
            return self.all_tokens(*feeds)

    def all_tokens(
        self,
        image_embed: torch.Tensor,
        high_res_feats_0: torch.Tensor,
        high_res_feats_1: torch.Tensor,
        point_coords: torch.Tensor,
        point_labels: torch.Tensor,
        mask_input: torch.Tensor,
        has_mask_input: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """→ (B, 4, 4g, 4g) logits of every mask token, (B, 4) IoU (``predict_masks``, no selection)."""
        pe = self.prompt_encoder
        sparse = pe._embed_points(point_coords, point_labels, pad=True)
        no_mask = pe.no_mask_embed.weight.reshape(1, -1, 1, 1)
        dense = torch.where(has_mask_input.reshape(1, 1, 1, 1) > 0, pe._embed_masks(mask_input), no_mask)
        high_res = (high_res_feats_0, high_res_feats_1)
        if self.share_image:
            return self._predict(image_embed + dense, pe.get_dense_pe(), sparse, high_res)
        if self.token_upscaling:  # upstream's tiling (repeat_image), then the token-row upscaling
            b = sparse.shape[0]
            src = torch.repeat_interleave(image_embed, b, dim=0) + dense
            return self._predict(src, torch.repeat_interleave(pe.get_dense_pe(), b, dim=0), sparse, high_res)
        masks, iou, _, _ = self.mask_decoder.predict_masks(
            image_embeddings=image_embed,
            image_pe=pe.get_dense_pe(),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            repeat_image=True,
            high_res_features=list(high_res),
        )
        return masks, iou

    def _predict(
        self,
        src: torch.Tensor,
        pos: torch.Tensor,
        sparse: torch.Tensor,
        high_res: tuple[torch.Tensor, torch.Tensor],
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``MaskDecoder.predict_masks`` (followed) on ``src`` (1 or B, C, g, g) as given (never tiled
        here) and positional encoding ``pos``; the upscaling in token rows with ``token_upscaling``."""
        md = self.mask_decoder
        s = 1 if md.pred_obj_scores else 0
        lead = [md.obj_score_token.weight] if s else []
        out = torch.cat([*lead, md.iou_token.weight, md.mask_tokens.weight], dim=0)
        tokens = torch.cat((out.unsqueeze(0).expand(sparse.shape[0], -1, -1), sparse), dim=1)
        c, h, w = src.shape[1], src.shape[2], src.shape[3]
        hs, keys = md.transformer(src, pos, tokens)  # keys: (B, g², C)
        tok = hs[:, s + 1 : s + 1 + md.num_mask_tokens, :]
        hyper = torch.stack(
            [md.output_hypernetworks_mlps[i](tok[:, i, :]) for i in range(md.num_mask_tokens)], 1
        )
        feats = high_res if md.use_high_res_features else None
        if self.token_upscaling:
            masks = masks_from_rows(hyper, upscale_rows(md.output_upscaling, keys, feats), h, w)
            return masks, md.iou_prediction_head(hs[:, s, :])
        grid = keys.transpose(1, 2).reshape(keys.shape[0], c, h, w)
        if feats is None:
            up = md.output_upscaling(grid)
        else:
            dc1, ln1, act1, dc2, act2 = md.output_upscaling
            up = act2(dc2(act1(ln1(dc1(grid) + feats[1]))) + feats[0])
        b, cu, hu, wu = up.shape
        masks = (hyper @ up.reshape(b, cu, hu * wu)).reshape(b, -1, hu, wu)
        return masks, md.iou_prediction_head(hs[:, s, :])


class Sam2DecoderBatched(Sam2PromptDecoder):
    """B prompt sets against one image's features → all tokens' logits (B, 4, 4g, 4g), IoU (B, 4)."""

    def forward(
        self,
        image_embed: torch.Tensor,
        high_res_feats_0: torch.Tensor,
        high_res_feats_1: torch.Tensor,
        point_coords: torch.Tensor,
        point_labels: torch.Tensor,
        mask_input: torch.Tensor,
        has_mask_input: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return self.forward_all(
            image_embed,
            high_res_feats_0,
            high_res_feats_1,
            point_coords,
            point_labels,
            mask_input,
            has_mask_input,
        )


class Sam2Decoder(Sam2PromptDecoder):
    """The point interface: one prompt set → masks at (H, W), IoU, low-res logits (see module docstring)."""

    def __init__(
        self,
        model: nn.Module,
        multimask_output: bool = True,
        token_upscaling: bool = False,
        scale_first: bool = False,
    ) -> None:
        # one prompt set: nothing to share
        super().__init__(model, token_upscaling=token_upscaling, scale_first=scale_first)
        self.multimask_output = multimask_output
        md = model.sam_mask_decoder
        self.dynamic = bool(md.dynamic_multimask_via_stability)
        self.delta = float(md.dynamic_multimask_stability_delta)
        self.thresh = float(md.dynamic_multimask_stability_thresh)

    def forward(
        self,
        image_embed: torch.Tensor,
        high_res_feats_0: torch.Tensor,
        high_res_feats_1: torch.Tensor,
        point_coords: torch.Tensor,
        point_labels: torch.Tensor,
        mask_input: torch.Tensor,
        has_mask_input: torch.Tensor,
        orig_im_size: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        masks, iou = self.forward_all(
            image_embed,
            high_res_feats_0,
            high_res_feats_1,
            point_coords,
            point_labels,
            mask_input,
            has_mask_input,
        )
        if self.multimask_output:  # MaskDecoder.forward's selection
            masks, iou = masks[:, 1:], iou[:, 1:]
        elif self.dynamic:
            masks, iou = dynamic_multimask(masks, iou, self.delta, self.thresh)
        else:
            masks, iou = masks[:, 0:1], iou[:, 0:1]
        size = orig_im_size.to(torch.int64)
        full = F.interpolate(masks.float(), size=(size[0], size[1]), mode="bilinear", align_corners=False)
        return full, iou, torch.clamp(masks, -32.0, 32.0)


def _image_feeds(model: nn.Module, gen: torch.Generator) -> dict[str, torch.Tensor]:
    return {s.name: randn(s.shape, gen) for s in encoder_output_specs(model, batch=1)}  # type: ignore[arg-type]


def _points(gen: torch.Generator, b: int, n: int, s: int, labels_hi: int = 2) -> dict[str, torch.Tensor]:
    return {
        "point_coords": rand((b, n, 2), gen, float(s)),
        "point_labels": torch.randint(0, labels_hi, (b, n), generator=gen).to(torch.float32),
    }


def _prompt_inputs(batch: int | str, mask_batch: int | str, g: int) -> tuple[TensorSpec, ...]:
    return (
        TensorSpec("point_coords", "float32", (batch, "num_points", 2), allow_float64=True),
        TensorSpec("point_labels", "float32", (batch, "num_points"), allow_float64=True),
        TensorSpec("mask_input", "float32", (mask_batch, 1, 4 * g, 4 * g)),
        TensorSpec("has_mask_input", "float32", (1,), allow_float64=True),
    )


def _decoder_metadata(model: nn.Module) -> dict:
    info = sam2_info(model)
    return {
        "coords_frame": f"S-frame: x / W * {info.img_size}, y / H * {info.img_size} "
        "(SAM2Transforms.transform_coords, normalize=True); the graph appends the padding point",
        "mask_threshold": 0.0,
        "low_res_size": 4 * info.embedding_size,
        "input_size": info.img_size,
        "dynamic_multimask_stability_delta": info.dynamic_multimask_stability_delta,
        "dynamic_multimask_stability_thresh": info.dynamic_multimask_stability_thresh,
    }


def prepare_sam2_decoder(
    model: nn.Module, multimask_output: bool = True, token_upscaling: bool = True, scale_first: bool = True
) -> Prepared:
    """Bind ``sam2_decoder``: dummy N=3 at 1500×2250; validation at other N and aspect ratios.
    ``token_upscaling`` / ``scale_first``: the upscaling as MatMuls on token rows (upscaling.py), the
    attention scale on Q before Q·Kᵀ (attention.py); the export defaults."""
    info = sam2_info(model)
    s, g = info.img_size, info.embedding_size
    m = 3 if multimask_output else 1
    gen = seeded(12)

    def feeds(n: int, hw: tuple[int, int], has_mask: float) -> dict[str, torch.Tensor]:
        return {
            **_image_feeds(model, gen),
            **_points(gen, 1, n, s, labels_hi=4),
            "mask_input": randn((1, 1, 4 * g, 4 * g), gen, 4.0),
            "has_mask_input": torch.tensor([has_mask], dtype=torch.float32),
            "orig_im_size": torch.tensor(hw, dtype=torch.float32),
        }

    return Prepared(
        module=Sam2Decoder(model, multimask_output, token_upscaling, scale_first).eval(),
        inputs=(
            *encoder_output_specs(model, batch=1),
            *_prompt_inputs(1, 1, g),
            TensorSpec("orig_im_size", "float32", (2,), allow_float64=True),
        ),
        outputs=(
            TensorSpec("masks", "float32", (1, m, "orig_height", "orig_width")),
            TensorSpec("iou_predictions", "float32", (1, m)),
            TensorSpec("low_res_masks", "float32", (1, m, 4 * g, 4 * g)),
        ),
        dummy=feeds(3, (1500, 2250), 1.0),
        validation=[feeds(1, (480, 640), 0.0), feeds(2, (500, 333), 1.0), feeds(4, (720, 1280), 0.0)],
        tolerances={"masks": _TOL, "iou_predictions": _TOL, "low_res_masks": _TOL},
        profiles={"num_points": AxisRange(1, 2, 16)},
        metadata={
            **_decoder_metadata(model),
            "interface": "SAM2ImagePredictor._predict(return_logits=True) on set_image features",
            "multimask_output": multimask_output,
        },
        options={
            "multimask_output": multimask_output,
            "token_upscaling": token_upscaling,
            "scale_first": scale_first,
        },
    )


def prepare_sam2_decoder_batched(
    model: nn.Module,
    share_image: bool = True,
    token_upscaling: bool = True,
    scale_first: bool = True,
    folded: bool = False,
) -> Prepared:
    """Bind ``sam2_decoder_batched``: dummy B=5, N=2 with a mask prompt; validation (1, 1) and (7, 1)
    without (the ignored mask prompt at batch 1, broadcast), (7, 3) with one per prompt.
    ``share_image`` / ``token_upscaling`` / ``scale_first``: the exported forms (the defaults;
    :class:`Sam2PromptDecoder`, upscaling.py, attention.py); all off: the module is bit-equal to upstream
    (the torch labeler's fp32 module). ``folded``: the cross attention's image-side projections folded
    to the token side (folded.py; ``export.decoder_attention: folded``, onnxruntime CPU's form).

    ``mask_input`` has its own batch axis, ``mask_batch``: 1 (an ignored all-zero prompt,
    ``has_mask_input`` 0: AMG's first pass) or B (the m2m step). At 1 the dense prompt embedding is one
    (1, C, g, g) map, so with ``share_image`` the first block's image-side projections run once per call
    instead of once per prompt."""
    info = sam2_info(model)
    s, g, k = info.img_size, info.embedding_size, info.num_mask_tokens
    gen = seeded(13)
    image = _image_feeds(model, gen)

    def feeds(b: int, n: int, has_mask: float, img: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {
            **img,
            **_points(gen, b, n, s),
            "mask_input": randn((b, 1, 4 * g, 4 * g), gen, 8.0)
            if has_mask
            else torch.zeros(1, 1, 4 * g, 4 * g),
            "has_mask_input": torch.tensor([has_mask], dtype=torch.float32),
        }

    return Prepared(
        module=Sam2DecoderBatched(model, share_image, token_upscaling, scale_first, folded).eval(),
        inputs=(*encoder_output_specs(model, batch=1), *_prompt_inputs("batch", "mask_batch", g)),
        outputs=(
            TensorSpec("low_res_masks", "float32", ("batch", k, 4 * g, 4 * g)),
            TensorSpec("iou_predictions", "float32", ("batch", k)),
        ),
        dummy=feeds(5, 2, 1.0, image),
        validation=[
            feeds(1, 1, 0.0, _image_feeds(model, gen)),
            feeds(7, 1, 0.0, image),
            feeds(7, 3, 1.0, image),
        ],
        tolerances={"low_res_masks": _TOL, "iou_predictions": _TOL},
        profiles={
            "batch": AxisRange(1, 64, 256),
            "mask_batch": AxisRange(1, 1, 256),  # 1: AMG's first pass; B only for m2m
            "num_points": AxisRange(1, 1, 4),
        },
        metadata={**_decoder_metadata(model), "tokens": "all (0 = single mask, 1..3 = multimask)"},
        options={
            "share_image": share_image,
            "token_upscaling": token_upscaling,
            "scale_first": scale_first,
            "folded": folded,
        },
    )


SAM2_DECODER = ExportSpec(
    "sam2_decoder",
    "sam2",
    "SAM 2 prompt encoder + mask decoder, point interface with high-res features, masks at (H, W)",
    prepare_sam2_decoder,
    exporter="legacy",
    exporter_reason="legacy: 10x faster export than dynamo (tiny: 3 s vs 34 s), same parity",
)
SAM2_DECODER_BATCHED = ExportSpec(
    "sam2_decoder_batched",
    "sam2",
    "SAM 2 decoder for AMG: one image's features, B prompt sets (+ mask prompts) → (B,4,4g,4g), (B,4)",
    prepare_sam2_decoder_batched,
    exporter="legacy",
    exporter_reason="legacy: 10x faster export than dynamo (tiny: 4 s vs 34 s); and dynamo cannot keep the "
    "separate mask_batch axis (it unifies it with batch: validation fails)",
)
