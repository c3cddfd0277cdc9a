"""Fast automatic mask generation (AMG) over the Engine API, with upstream's answers.

The steps and parameters are segment-anything's ``SamAutomaticMaskGenerator`` (we followed
``automatic_mask_generator.py``: point grids, crop boxes, the filter order of ``_process_batch``,
per-crop then cross-crop NMS, small-region post-processing). What changes is where the work is done:

- prompts go through the ``sam_decoder_batched`` engine in large, memory-sized batches (results do
  not depend on the batch size; segment-anything-fast also batches all prompts of an image);
- IoU head first: predicted-IoU filtering happens on the low-res logits, before any upsampling;
- stability and box decisions are upstream's full-resolution ones, taken from the low-res logits
  (``amg_lowres``: guaranteed stability bounds, exact boxes from thin bands of rows/columns); only
  masks whose stability bounds straddle the threshold are upsampled to decide (``amg_filter``: one
  fused static-shape filter per decoder batch, no host sync inside the decoder loop on CUDA, one
  resolution per crop);
- only NMS survivors are upsampled (two-stage bilinear, exactly as ``Sam.postprocess_masks``); their
  reported stability scores come from those full-resolution logits, as upstream's do;
- everything stays on the engine's device as torch tensors; RLE is computed once, at the end.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
from torchvision.ops import batched_nms, box_area

from zsplg_fast.config.labeling import AmgConfig
from zsplg_fast.engines.base import Engine
from zsplg_fast.errors import ConfigError
from zsplg_fast.labeling import amg_ops as ops
from zsplg_fast.labeling.amg_filter import (
    CropGeometry,
    FilterParams,
    Pending,
    _chunk_rows,
    filter_compacting,
    filter_flags,
    filter_full_res,
    resolve,
)
from zsplg_fast.labeling.amg_output import (
    OUTPUT_MODES,
    AmgMasks,
    cat_crops,
    postprocess_small_regions,
    to_records,
)
from zsplg_fast.labeling.amg_overlap import EncodedImage, Streams, pipelined
from zsplg_fast.labeling.amg_prepare import PreparedImage, prepare_image, resize_longest
from zsplg_fast.labeling.masks import MaskSet
from zsplg_fast.labeling.proposers import SamProposer

SAM_PIXEL_MEAN = (123.675, 116.28, 103.53)
SAM_PIXEL_STD = (58.395, 57.12, 57.375)


_POST_STAGES = ("filter", "nms", "upsample", "small_regions", "encode")


class MaskGenerator:
    """SAM automatic mask generation on an encoder engine and a batched-decoder engine.

    Args:
        encoder: ``sam_encoder`` engine: ``image`` (B, 3, S, S) float32 normalised, zero-padded
            bottom-right → ``image_embeddings`` (B, C, S/16, S/16).
        decoder: ``sam_decoder_batched`` engine: ``image_embeddings`` (1, C, h, w), ``point_coords``
            (B, N, 2) float32 in the S-frame, ``point_labels`` (B, N) float32 → ``low_res_masks``
            (B, 3, 4h, 4w) logits and ``iou_predictions`` (B, 3); or, with ``decoder_image``, a
            ``sam_decoder_shared`` engine taking that engine's outputs instead of ``image_embeddings``.
        decoder_image: ``sam_decoder_image`` engine (``image_embeddings`` → the decoder's
            prompt-independent tensors), run once per crop; its outputs feed every decoder call of
            the crop. None: the decoder takes the embedding itself.
        cfg: upstream's AMG parameters (``points_per_batch`` is upstream's knob; see ``prompt_batch``).
        output_mode: ``binary_mask`` | ``uncompressed_rle`` | ``coco_rle`` for :meth:`generate`.
        prompt_batch: prompts per decoder call, capped at the decoder's profile max
            (:func:`amg_ops.engine_max_batch`); None = automatic (``amg_ops.default_prompt_batch``:
            cache-sized on CPU, memory-aware on CUDA); results do not depend on it.
        full_res_filter: take stability and box decisions on every candidate upsampled to full
            resolution, as upstream does (slow on CPUs; a reference). False: same decisions from the
            low-res logits (see ``amg_lowres``).
        encoder_batch: images (crops) per encoder call.
        image_size: S, when the encoder's ``image`` input does not fix it.
        pixel_mean, pixel_std: normalisation on the 0..255 scale (SAM's by default).
        mask_threshold: logit cut-off of a mask (SAM: 0.0).
        post_threads: CPU threads for filtering/NMS/upsampling (small ops: on a shared CPU, OpenMP
            threads spin-wait on each other, measured 25× slower with 2 threads at load 6 on 2 cores);
            None = torch's setting. Engines keep their own threads.
        sync_free: filter each decoder batch with the fused static-shape filter and resolve once per
            crop (no host sync in the decoder loop); None = on every device but the CPU (there syncs
            are free and compacting after each test saves work). Same masks either way.
        compile_filter: ``torch.compile`` the fused filter (sync-free mode; the label command turns it
            on with ``compile``).
        sync_timings: synchronise CUDA at each stage so ``timings`` are device times (benchmarks);
            off, CUDA stage timings are launch times and the device runs ahead.
        proposer: the mask-proposer family's conventions (``proposers.SamProposer`` by default;
            ``Sam2Proposer`` for ``sam2_encoder`` / ``sam2_decoder_batched`` engines, whose inputs are
            SAM 2's: pixel mean/std and padding do not apply).
        overlap: encode ahead (the next encoder batch, or with :meth:`encode_ahead` the job's next image)
            while the current image is decoded and filtered: on a second CUDA stream (``amg_overlap``);
            None = on CUDA only. Same masks either way.
    """

    def __init__(
        self,
        encoder: Engine,
        decoder: Engine,
        cfg: AmgConfig,
        *,
        decoder_image: Engine | None = None,
        output_mode: str = "binary_mask",
        prompt_batch: int | None = None,
        full_res_filter: bool = False,
        encoder_batch: int = 4,
        image_size: int | None = None,
        pixel_mean: Sequence[float] = SAM_PIXEL_MEAN,
        pixel_std: Sequence[float] = SAM_PIXEL_STD,
        mask_threshold: float = 0.0,
        post_threads: int | None = 1,
        sync_free: bool | None = None,
        compile_filter: bool = False,
        sync_timings: bool = False,
        proposer: Any | None = None,
        overlap: bool | None = None,
    ) -> None:
        if output_mode not in OUTPUT_MODES:
            raise ConfigError(
                "output_mode", output_mode, "unknown output mode", valid=", ".join(OUTPUT_MODES)
            )
        if prompt_batch is not None and prompt_batch < 1:
            raise ConfigError("prompt_batch", prompt_batch, "must be >= 1 (or null for automatic)")
        self.encoder, self.decoder, self.cfg = encoder, decoder, cfg
        self.decoder_image = decoder_image
        self.output_mode = output_mode
        self.prompt_batch = prompt_batch
        self.batch_used: int | None = None  # prompts per decoder call in the last crop (reports)
        self.full_res_filter = bool(full_res_filter)
        self.encoder_batch = max(1, int(encoder_batch))
        self.image_size = image_size or self._spec_image_size()
        self.device = ops.device_of(decoder)
        self.mean = torch.tensor(pixel_mean, dtype=torch.float32, device=self.device).view(1, 3, 1, 1)
        self.std = torch.tensor(pixel_std, dtype=torch.float32, device=self.device).view(1, 3, 1, 1)
        self.mask_threshold = float(mask_threshold)
        self.post_threads = post_threads
        self.grids = ops.layer_point_grids(
            cfg.points_per_side, cfg.crop_n_layers, cfg.crop_n_points_downscale_factor
        )
        self.unsure_stability = 0
        """Candidates whose stability had to be upsampled to decide (since construction)."""
        self.params = FilterParams(
            cfg.pred_iou_thresh, cfg.stability_score_thresh, cfg.stability_score_offset, self.mask_threshold
        )
        self.sync_free = self.device.type != "cpu" if sync_free is None else bool(sync_free)
        self.sync_timings = bool(sync_timings)
        self._flags = torch.compile(filter_flags) if compile_filter else filter_flags  # automatic dynamic
        self.streams = Streams(self.device, overlap)
        """Where the encoder runs: a second CUDA stream (overlaps the decoder), or inline on CPUs."""
        self.proposer = proposer if proposer is not None else SamProposer()
        self.timings: dict[str, float] = {}
        """Seconds per stage of the last call (preprocess, encoder, decoder, filter, nms, upsample, ...)."""

    def _spec_image_size(self) -> int:
        for spec in self.encoder.inputs:
            if spec.name == "image" and isinstance(spec.shape[-1], int):
                return int(spec.shape[-1])
        raise ConfigError("image_size", None, "the encoder does not fix its input size; pass image_size=S")

    # ---- public API --------------------------------------------------------------------------------

    def generate(self, image: np.ndarray) -> list[dict[str, Any]]:
        """(H, W, 3) uint8 RGB → upstream-format records (``segmentation`` per ``output_mode``)."""
        result = self.generate_tensors(image)
        with self._stage("encode"):
            return to_records(result, self.output_mode)

    def __call__(self, image: np.ndarray) -> MaskSet:
        """(H, W, 3) uint8 RGB → MaskSet (the labeling job's MaskSource protocol)."""
        return self.generate_tensors(image).to_maskset()

    def generate_tensors(self, image: np.ndarray) -> AmgMasks:
        """(H, W, 3) uint8 RGB → AmgMasks on the device (masks (K, H, W) bool)."""
        return self.generate_batch([image])[0]

    def prepare(self, image: np.ndarray) -> PreparedImage:
        """(H, W, 3) uint8 RGB → its crops resized for the encoder (CPU, thread-safe: decode workers)."""
        return prepare_image(image, self.image_size, self.cfg, self.proposer.resize)

    def generate_batch(self, images: Sequence[np.ndarray]) -> list[AmgMasks]:
        """Several images: the encoder sees all their crops in batches of ``encoder_batch``."""
        t0 = time.perf_counter()
        prepared = [self.prepare(im) for im in images]
        t_resize = time.perf_counter() - t0
        result = self.generate_prepared(prepared)
        self.timings["preprocess"] = self.timings.get("preprocess", 0.0) + t_resize
        return result

    @property
    def overlap(self) -> bool:
        """True when :meth:`encode_ahead` should be called as soon as an image is ready (CUDA)."""
        return bool(self.streams.overlaps)

    @torch.inference_mode()
    def encode_ahead(self, prepared: PreparedImage) -> EncodedImage:
        """Launch the encoder on every crop of ``prepared`` on the encoder stream and return at once (CUDA
        runs it while the current stream decodes the previous image); :meth:`finish_encoded` ends it."""
        saved, self.timings = self.timings, {}
        try:
            launched = self.streams.launch(self._encode, [c.resized for c in prepared.crops])
        finally:
            spent, self.timings = self.timings, saved
        return EncodedImage(prepared, launched, spent)

    @torch.inference_mode()
    def finish_encoded(self, encoded: EncodedImage) -> AmgMasks:
        """The masks of an image from :meth:`encode_ahead` (decoder, filter, NMS, upsampling on the
        current stream, after waiting for its encoder only); may be called again (out-of-memory retry)."""
        self.timings = dict(encoded.timings)
        embs = self.streams.handoff(encoded.launched)
        crops = [(c.box, c.layer, e) for c, e in zip(encoded.prepared.crops, embs, strict=True)]
        return self._generate_one(encoded.prepared.hw, crops)

    @torch.inference_mode()
    def generate_prepared(self, prepared: Sequence[PreparedImage]) -> list[AmgMasks]:
        """Images already cut and resized on the CPU (``amg_prepare.prepare_image``) → their masks.

        Crops go to the encoder in batches of ``encoder_batch``, one batch ahead: on CUDA the next
        batch is encoded on a second stream while the current image is decoded and filtered
        (``amg_overlap``); on CPUs the same order runs sequentially.
        """
        self.timings = {}
        jobs = [(i, c) for i, p in enumerate(prepared) for c in p.crops]

        def finish(i: int, embs: list[Any]) -> AmgMasks:
            crops = [
                (c.box, c.layer, e) for (_, c), e in zip([j for j in jobs if j[0] == i], embs, strict=True)
            ]
            return self._generate_one(prepared[i].hw, crops)

        return pipelined(
            len(jobs),
            self.encoder_batch,
            [i for i, _ in jobs],
            lambda rng: self._encode([jobs[j][1].resized for j in rng]),
            finish,
            self.streams,
        )

    # ---- stages ------------------------------------------------------------------------------------

    @contextmanager
    def _stage(self, name: str) -> Iterator[None]:
        """Time a stage; post-processing stages (not the engines) run with ``post_threads`` CPU threads."""
        t0 = time.perf_counter()
        threads = torch.get_num_threads()
        post = name in _POST_STAGES and self.post_threads and self.device.type == "cpu"
        if post:
            torch.set_num_threads(self.post_threads)
        try:
            yield
        finally:
            if post:
                torch.set_num_threads(threads)
            if self.sync_timings and self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
            self.timings[name] = self.timings.get(name, 0.0) + time.perf_counter() - t0

    def _preprocess(self, crop: np.ndarray) -> torch.Tensor:
        """(h, w, 3) uint8 → (1, 3, S, S) float32, both halves at once (bench/gpu_check.py)."""
        return self._normalize_pad(resize_longest(crop, self.image_size))

    def _normalize_pad(self, resized: np.ndarray) -> torch.Tensor:
        """(h', w', 3) uint8 resized crop → (1, 3, S, S) float32: normalise, then zero-pad bottom-right
        (as Sam.preprocess)."""
        s = self.image_size
        x = torch.from_numpy(resized).to(self.device).permute(2, 0, 1)[None].float()
        x = (x - self.mean) / self.std
        return torch.nn.functional.pad(x, (0, s - resized.shape[1], 0, s - resized.shape[0]))

    def _encode(self, resized: list[np.ndarray]) -> list[dict[str, Any]]:
        """Per resized crop, the decoder's per-image feeds (SAM: ``image_embeddings`` (1, C, h, w); SAM 2:
        ``image_embed`` + the two high-res maps), in the encoder's native array type."""
        out: list[dict[str, Any]] = []
        names = self.proposer.encoder_outputs
        for start in range(0, len(resized), self.encoder_batch):
            with self._stage("preprocess"):
                chunk = resized[start : start + self.encoder_batch]
                x = torch.cat([self.proposer.to_input(c, self) for c in chunk])
            with self._stage("encoder"):
                res = self.encoder({"image": ops.feed(self.encoder, x)})
            out += [{n: res[n][j : j + 1] for n in names} for j in range(x.shape[0])]
        return out

    def _generate_one(self, hw: tuple[int, int], crops: list[tuple[list[int], int, Any]]) -> AmgMasks:
        h, w = hw
        parts = [self._process_crop(emb, box, layer, (h, w)) for box, layer, emb in crops]
        with self._stage("nms"):
            result = cat_crops(parts, self.device, (h, w))
            if len(crops) > 1 and len(result):  # prefer masks from smaller crops
                scores = 1.0 / box_area(result.crop_boxes.float())
                keep = batched_nms(result.boxes.float(), scores, ops.zeros(scores), self.cfg.crop_nms_thresh)
                result = result.select(keep)
        if self.cfg.min_mask_region_area > 0 and len(result):
            with self._stage("small_regions"):
                result = postprocess_small_regions(
                    result,
                    self.cfg.min_mask_region_area,
                    max(self.cfg.box_nms_thresh, self.cfg.crop_nms_thresh),
                )
        return result

    def _process_crop(
        self, feeds: dict[str, Any], crop_box: list[int], layer: int, orig_hw: tuple[int, int]
    ) -> AmgMasks:
        x0, y0, x1, y1 = crop_box
        crop_hw = (y1 - y0, x1 - x0)
        input_hw = ops.preprocess_shape(crop_hw[0], crop_hw[1], self.image_size)
        pts = self.grids[layer] * np.array([crop_hw[1], crop_hw[0]], dtype=np.float64)  # (P, 2) crop frame
        coords, points = self.proposer.prompts(pts, crop_hw, input_hw, self.image_size)
        emb = next(iter(feeds.values()))  # the (1, C, h, w) embedding sizes the prompt batch
        batch = self.prompt_batch or ops.default_prompt_batch(
            self.device, tuple(emb.shape[-2:]), emb.shape[1], str(getattr(self.decoder, "backend", ""))
        )
        limit = ops.engine_max_batch(self.decoder)
        batch = min(batch, limit) if limit else batch  # a plan built for 256 refuses 1024 prompts
        self.batch_used = batch
        pending: list[Pending] = []
        with self._stage("decoder"):
            image_feeds = self.decoder_image({"image_embeddings": emb}) if self.decoder_image else feeds
            # every prompt of the crop goes to the device once (no copy per batch)
            coords_all = ops.feed(self.decoder, coords)
            labels_all = ops.feed(self.decoder, torch.ones((len(coords), 1)))
            points_all = points.to(self.device)
        geom: CropGeometry | None = None
        for start in range(0, len(pts), batch):
            sl = slice(start, start + batch)
            with self._stage("decoder"):
                low, iou = self.proposer.decode(
                    self.decoder, image_feeds, coords_all[sl], labels_all[sl], ops.feed, batch
                )
                low, iou = low.to(self.device), iou.to(self.device)
            with self._stage("filter"):
                if geom is None:  # where the low-res logits land (SAM: 4 input pixels per cell)
                    geom = self.proposer.geometry(input_hw, crop_hw, self.image_size, tuple(low.shape[-2:]))
                points = points_all[sl].repeat_interleave(low.shape[1], dim=0)
                pending.append(self._filter(low.flatten(0, 1), iou.flatten(), points, geom))
        assert geom is not None  # at least one prompt per crop (points_per_side >= 1)
        with self._stage("filter"):
            c, n_unsure = resolve(Pending.cat(pending), geom, self.params, crop_box, orig_hw)
            self.unsure_stability += n_unsure
        with self._stage("nms"):
            keep = batched_nms(c.boxes.float(), c.iou.float(), ops.zeros(c.iou), self.cfg.box_nms_thresh)
        with self._stage("upsample"):
            masks, stab, boxes = self._upsample(c.low[keep], geom)
        off = torch.tensor([x0, y0], device=self.device)
        return AmgMasks(
            masks=masks,
            iou_preds=c.iou[keep].float(),
            stability=stab,
            boxes=boxes + off.repeat(2),
            points=c.points[keep] + off.to(c.points.dtype),
            crop_boxes=torch.tensor([crop_box], device=self.device).expand(len(keep), 4),
        )

    def _filter(
        self, low: torch.Tensor, iou: torch.Tensor, points: torch.Tensor, geom: CropGeometry
    ) -> Pending:
        """One decoder batch's candidates (M, h4, w4) → Pending flags (upstream's filter order:
        predicted IoU, stability, boxes; the crop-edge test and uncertain cases wait for ``resolve``).

        Sync-free devices (CUDA): the fused static-shape :func:`amg_filter.filter_flags` (compiled when
        ``compile_filter``), no host sync in the decoder loop. CPUs: the same decisions, compacting
        after each test (syncs are free there, the work saved is not).
        """
        if self.full_res_filter:
            return filter_full_res(low, iou, points, geom, self.params)
        if not self.sync_free:
            return filter_compacting(low, iou, points, geom, self.params)
        cut, ok, unsure, boxes, redo = self._flags(low, iou, geom, self.params)
        return Pending(cut, iou, points, ok, unsure, boxes, redo)

    def _upsample(
        self, low: torch.Tensor, geom: CropGeometry
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Survivors' logits → (K, h, w) bool masks, exact stability (K,), exact XYXY boxes (K, 4)."""
        crop_hw = geom.crop_hw
        masks = torch.empty((len(low), *crop_hw), dtype=torch.bool, device=self.device)
        stab = torch.empty(len(low), dtype=torch.float32, device=self.device)
        if len(low) == 0:
            return masks, stab, torch.zeros((0, 4), dtype=torch.int64, device=self.device)
        step = _chunk_rows(len(low), crop_hw, self.device)
        for i in range(0, len(low), step):
            full = ops.upsample_logits(low[i : i + step].float(), geom.input_hw, crop_hw, geom.ratio)
            stab[i : i + step] = ops.stability_score(
                full, self.mask_threshold, self.cfg.stability_score_offset
            )
            torch.gt(full, self.mask_threshold, out=masks[i : i + step])
        return masks, stab, ops.masks_to_boxes(masks)
