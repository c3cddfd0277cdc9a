"""Mask-proposer families for the one AMG (``amg.MaskGenerator``): SAM and SAM 2 / 2.1.

The generator's steps (point grids, crops, IoU-first fused filter, NMS, upsampling of survivors) are
the same for both families; what differs is a registry entry here (no if/elif over families):

- input: SAM resizes the long side to S (PIL bilinear), pads bottom-right, mean/std on 0..255; SAM 2
  resizes both sides to S (torch bilinear, antialias) on 0..1 with ImageNet mean/std, no padding;
- prompts: SAM ``ResizeLongestSide.apply_coords`` (float64, then float32); SAM 2
  ``transform_coords(normalize=True)`` in float32;
- encoder → decoder: SAM ``image_embeddings``; SAM 2 ``image_embed`` + ``high_res_feats_0/1``;
- decoder out: SAM 3 multimask logits; SAM 2 all 4 tokens, the generator takes 1..3 or the dynamic
  single mask, and with ``use_m2m`` feeds each mask back as the mask prompt (one mask out);
- to full size: SAM bilinear ×4 to S, crop, bilinear to (h, w); SAM 2 one bilinear resize of the 4g
  grid to (h, w) (``ratio`` 1 in ``CropGeometry``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from zsplg_fast.config.labeling import AmgConfig
from zsplg_fast.engines.base import Engine
from zsplg_fast.errors import ConfigError
from zsplg_fast.export.specs.sam2_select import dynamic_multimask
from zsplg_fast.labeling.amg_filter import CropGeometry
from zsplg_fast.labeling.amg_prepare import resize_longest

Feed = Callable[[Engine, torch.Tensor], Any]

SAM2_MEAN = (0.485, 0.456, 0.406)
SAM2_STD = (0.229, 0.224, 0.225)
SAM2_ENCODER_OUTPUTS = ("image_embed", "high_res_feats_0", "high_res_feats_1")


def resize_square_sam2(crop: np.ndarray, image_size: int) -> np.ndarray:
    """(h, w, 3) uint8 → (3, S, S) float32, as sam2 ``SAM2Transforms``: ToTensor (0..1), Resize((S, S))
    (bilinear, antialias, aspect ratio not kept), Normalize(ImageNet). Runs on the CPU, as upstream's."""
    from torchvision.transforms.functional import normalize, resize, to_tensor

    # a read-only array (Ray's prepared batches) is copied: torch warns on non-writable numpy memory
    crop = np.ascontiguousarray(crop) if crop.flags.writeable else np.array(crop)
    x = resize(to_tensor(crop), [image_size, image_size], antialias=True)
    return normalize(x, list(SAM2_MEAN), list(SAM2_STD)).numpy()


@dataclass
class SamProposer:
    """segment-anything's AMG conventions (the generator's behaviour before SAM 2)."""

    family: str = "sam"
    encoder_outputs: tuple[str, ...] = ("image_embeddings",)

    def resize(self, crop: np.ndarray, image_size: int) -> np.ndarray:
        """CPU half: (h, w, 3) uint8 → (h', w', 3) uint8, long side S."""
        return resize_longest(crop, image_size)

    def to_input(self, resized: np.ndarray, gen: Any) -> torch.Tensor:
        """Device half: → (1, 3, S, S) float32 (normalise, zero-pad bottom-right, as ``Sam.preprocess``)."""
        return gen._normalize_pad(resized)

    def prompts(
        self, pts: np.ndarray, crop_hw: tuple[int, int], input_hw: tuple[int, int], image_size: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(P, 2) float64 crop-frame points → (P, 1, 2) float32 S-frame coords, (P, 2) points to report."""
        s_frame = pts * np.array([input_hw[1] / crop_hw[1], input_hw[0] / crop_hw[0]])
        return torch.from_numpy(s_frame.astype(np.float32))[:, None, :], torch.from_numpy(pts)

    def geometry(
        self, input_hw: tuple[int, int], crop_hw: tuple[int, int], image_size: int, low_hw: tuple[int, int]
    ) -> CropGeometry:
        return CropGeometry(input_hw, crop_hw, image_size // low_hw[0], low_hw)

    def decode(
        self, decoder: Engine, image_feeds: dict[str, Any], coords: Any, labels: Any, feed: Feed, limit: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """→ (B, 3, h4, w4) low-res logits, (B, 3) IoU on the generator's device (as engine outputs)."""
        out = decoder({**image_feeds, "point_coords": coords, "point_labels": labels})
        return torch.as_tensor(out["low_res_masks"]), torch.as_tensor(out["iou_predictions"])


@dataclass
class Sam2Proposer:
    """sam2 ``SAM2AutomaticMaskGenerator``'s conventions on ``sam2_encoder`` / ``sam2_decoder_batched``.

    Args:
        multimask_output: three masks per point (tokens 1..3), else one (dynamic via stability).
        use_m2m: refine every candidate once with its own low-res logits (clamped ±32) as mask prompt.
        delta, thresh: the decoder's dynamic multimask stability delta / threshold (sidecar).
    """

    multimask_output: bool = True
    use_m2m: bool = False
    delta: float = 0.05
    thresh: float = 0.98
    family: str = "sam2"
    encoder_outputs: tuple[str, ...] = SAM2_ENCODER_OUTPUTS

    def resize(self, crop: np.ndarray, image_size: int) -> np.ndarray:
        """CPU half: (h, w, 3) uint8 → (3, S, S) float32, normalised (the whole of SAM2Transforms)."""
        return resize_square_sam2(crop, image_size)

    def to_input(self, resized: np.ndarray, gen: Any) -> torch.Tensor:
        return torch.from_numpy(resized)[None].to(gen.device)

    def prompts(
        self, pts: np.ndarray, crop_hw: tuple[int, int], input_hw: tuple[int, int], image_size: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """As ``_process_batch``: float32 points, x / w, y / h, × S (``transform_coords``)."""
        points = torch.as_tensor(pts, dtype=torch.float32)
        coords = points.clone()
        coords[..., 0] = coords[..., 0] / crop_hw[1]
        coords[..., 1] = coords[..., 1] / crop_hw[0]
        return (coords * image_size)[:, None, :], points

    def geometry(
        self, input_hw: tuple[int, int], crop_hw: tuple[int, int], image_size: int, low_hw: tuple[int, int]
    ) -> CropGeometry:
        # one bilinear resize of the whole low-res grid to the crop (SAM2Transforms.postprocess_masks)
        return CropGeometry(low_hw, crop_hw, 1, low_hw)

    def _tokens(
        self,
        decoder: Engine,
        image_feeds: dict[str, Any],
        prompts: tuple[Any, Any],
        masks: torch.Tensor,
        has_mask: bool,
        feed: Feed,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One ``sam2_decoder_batched`` call → all tokens' (B, 4, h, w) logits and (B, 4) IoU."""
        out = decoder(
            {
                **image_feeds,
                "point_coords": prompts[0],
                "point_labels": prompts[1],
                "mask_input": feed(decoder, masks),
                "has_mask_input": feed(decoder, torch.full((1,), float(has_mask))),
            }
        )
        return torch.as_tensor(out["low_res_masks"]), torch.as_tensor(out["iou_predictions"])

    def decode(
        self, decoder: Engine, image_feeds: dict[str, Any], coords: Any, labels: Any, feed: Feed, limit: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """→ (B, K, 4g, 4g) logits, (B, K) IoU; K = 3 (multimask) or 1, after m2m when on."""
        n = len(coords)
        low_hw = _low_hw(image_feeds)
        # ignored (has_mask_input 0): SamPredictor's no-mask path, one row when the decoder broadcasts it
        zeros = torch.zeros((_no_mask_rows(decoder, n), 1, *low_hw))
        masks, iou = self._tokens(decoder, image_feeds, (coords, labels), zeros, False, feed)
        masks, iou = self._select(masks, iou, self.multimask_output)
        if not self.use_m2m:
            return masks, iou
        k = masks.shape[1]
        flat = torch.clamp(masks.flatten(0, 1), -32.0, 32.0)[:, None]  # what _predict returns, clamped
        c = torch.as_tensor(coords).to(flat.device).repeat_interleave(k, dim=0)
        lab = torch.as_tensor(labels).to(flat.device).repeat_interleave(k, dim=0)
        outs = []
        for i in range(0, len(flat), limit):  # the decoder's batch limit (its profile max)
            sl = slice(i, i + limit)
            prompts = (feed(decoder, c[sl]), feed(decoder, lab[sl]))
            m, q = self._tokens(decoder, image_feeds, prompts, flat[sl], True, feed)
            outs.append(self._select(m, q, False))
        refined = torch.cat([o[0] for o in outs]).reshape(n, k, *low_hw)
        return refined, torch.cat([o[1] for o in outs]).reshape(n, k)

    def _select(
        self, masks: torch.Tensor, iou: torch.Tensor, multimask: bool
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if multimask:  # MaskDecoder.forward(multimask_output=True)
            return masks[:, 1:], iou[:, 1:]
        return dynamic_multimask(masks, iou, self.delta, self.thresh)


def _no_mask_rows(decoder: Engine, n: int) -> int:
    """Rows of the ignored mask prompt for ``n`` prompt sets: 1 where ``mask_input`` has its own batch
    axis (``mask_batch``: the decoder broadcasts it, and a decoder that shares its image side does the
    image-side work once per call), else ``n`` (artifacts whose ``mask_input`` follows ``batch``)."""
    spec = next((s for s in getattr(decoder, "inputs", ()) if s.name == "mask_input"), None)
    return n if spec is None or spec.shape[0] == "batch" else 1


def _low_hw(image_feeds: dict[str, Any]) -> tuple[int, int]:
    h0 = image_feeds["high_res_feats_0"]
    return int(h0.shape[-2]), int(h0.shape[-1])


def sam_proposer(cfg: AmgConfig, metadata: dict[str, Any] | None = None) -> SamProposer:
    """SAM: refuses the SAM 2-only settings at other than their defaults (SAM's AMG has none of them)."""
    changed = {
        k: v
        for k, v in {
            "mask_threshold": cfg.mask_threshold,
            "multimask_output": cfg.multimask_output,
            "use_m2m": cfg.use_m2m,
        }.items()
        if v != {"mask_threshold": 0.0, "multimask_output": True, "use_m2m": False}[k]
    }
    if changed:
        key = next(iter(changed))
        raise ConfigError(f"amg.{key}", changed[key], "a SAM 2 setting; SAM's AMG has no such option")
    return SamProposer()


def sam2_proposer(cfg: AmgConfig, metadata: dict[str, Any] | None = None) -> Sam2Proposer:
    """SAM 2 from the AMG config and the decoder's sidecar metadata (dynamic multimask settings)."""
    meta = metadata or {}
    return Sam2Proposer(
        multimask_output=cfg.multimask_output,
        use_m2m=cfg.use_m2m,
        delta=float(meta.get("dynamic_multimask_stability_delta", 0.05)),
        thresh=float(meta.get("dynamic_multimask_stability_thresh", 0.98)),
    )


RESIZERS: dict[str, Callable[[np.ndarray, int], np.ndarray]] = {
    "sam": resize_longest,
    "sam2": resize_square_sam2,
}
"""Family → the CPU half of its preprocessing (``prepare_image``'s ``resize``; Ray's CPU stage)."""

PROPOSERS: dict[str, Callable[..., Any]] = {"sam": sam_proposer, "sam2": sam2_proposer}
"""Family → ``proposer(amg_config, decoder_metadata)``."""


def make_proposer(family: str, cfg: AmgConfig, metadata: dict[str, Any] | None = None) -> Any:
    """The proposer of ``family`` (``sam`` | ``sam2``) for ``cfg``."""
    if family not in PROPOSERS:
        raise ConfigError("proposer", family, "unknown mask-proposer family", valid=", ".join(PROPOSERS))
    return PROPOSERS[family](cfg, metadata)
