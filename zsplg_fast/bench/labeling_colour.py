"""Structured-mask fidelity of ``bench_labeling``: the same AMG code paths, upstream vs ours, on the
colour SAM (``synthetic_sam``) and the colour SAM 2 (``synthetic_sam2``), whose masks follow colour
regions (random weights leave one or two image-wide masks). Split from ``labeling.py``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import torch

from zsplg_fast.bench.labeling_config import LabelBenchConfig, bench_image
from zsplg_fast.config.labeling import AmgConfig


def colour_fidelity(cfg: LabelBenchConfig, log: Callable[[str], None]) -> list[dict[str, Any]]:
    """Structured masks: upstream vs ours on the colour SAM (same AMG code paths, no learned weights)."""
    from segment_anything import SamAutomaticMaskGenerator

    from zsplg_fast.bench.labeling_pipelines import best_iou
    from zsplg_fast.bench.synthetic_sam import build_colour_sam, sam_module_engines
    from zsplg_fast.labeling.amg import MaskGenerator
    from zsplg_fast.labeling.masks import MaskSet

    sam = build_colour_sam(1024)
    enc, dec = sam_module_engines(sam)
    image = bench_image(*cfg.image_hw, seed=cfg.seed + 100)
    rows = []
    cases = [(g, 0.0, 0.0) for g in cfg.grids] + [(cfg.grids[0], 0.5, 0.8)]
    for grid, iou_t, stab_t in cases:
        kw = {"points_per_side": grid, "pred_iou_thresh": iou_t, "stability_score_thresh": stab_t}
        t0 = time.perf_counter()
        ref = SamAutomaticMaskGenerator(sam, **kw).generate(image)
        t_ref = time.perf_counter() - t0
        gen = MaskGenerator(enc, dec, AmgConfig(**kw), prompt_batch=cfg.prompt_batch)
        t0 = time.perf_counter()
        ours = gen.generate_tensors(image)
        t_ours = time.perf_counter() - t0
        ref_m = MaskSet.from_records(ref, cfg.image_hw).masks
        row = {
            **kw,
            "masks_upstream": len(ref),
            "masks_ours": len(ours),
            "mean_best_iou": round(best_iou(ref_m, ours.masks.cpu()), 5),
            "count_ratio": round(len(ours) / max(1, len(ref)), 4),
            "upstream_s": round(t_ref, 2),
            "ours_s": round(t_ours, 2),
            "ours_stages_s": {k: round(v, 3) for k, v in gen.timings.items()},
            "stability_decided_at_full_res": gen.unsure_stability,
        }
        log(f"colour SAM {row}")
        rows.append(row)
    return rows


def colour2_fidelity(cfg: LabelBenchConfig, log: Callable[[str], None]) -> list[dict[str, Any]]:
    """SAM 2: sam2's SAM2AutomaticMaskGenerator vs ours (the ``sam2_*`` spec modules) on the colour SAM 2,
    at sam2's defaults (pred_iou 0.8, stability 0.95) and at thresholds 0: exact mask equality expected."""
    from zsplg_fast.bench.labeling_pipelines import BENCH_SPECS, best_iou
    from zsplg_fast.bench.synthetic_sam2 import build_colour_sam2
    from zsplg_fast.engines.torch_engine import TorchEngine
    from zsplg_fast.export.specs import get_spec
    from zsplg_fast.labeling.amg import MaskGenerator
    from zsplg_fast.labeling.masks import MaskSet, upstream_sam2_generator
    from zsplg_fast.labeling.proposers import make_proposer

    model = build_colour_sam2(1024)
    spec = BENCH_SPECS["sam2"]
    engines = []
    for name in (spec.encoder, spec.decoder):
        p = get_spec(name).bind(model)
        engines.append(TorchEngine(p.module, p.inputs, p.outputs, device="cpu", name=name))
    image = bench_image(*cfg.image_hw, seed=cfg.seed + 100)
    rows = []
    for grid in cfg.grids:
        for iou_t, stab_t, m2m in ((0.8, 0.95, False), (0.8, 0.95, True), (0.0, 0.0, False)):
            amg = AmgConfig(
                points_per_side=grid, pred_iou_thresh=iou_t, stability_score_thresh=stab_t, use_m2m=m2m
            )
            t0 = time.perf_counter()
            ref = upstream_sam2_generator(model, amg).generate(image)
            t_ref = time.perf_counter() - t0
            gen = MaskGenerator(
                *engines, amg, proposer=make_proposer("sam2", amg), prompt_batch=cfg.prompt_batch
            )
            t0 = time.perf_counter()
            ours = gen.generate_tensors(image)
            t_ours = time.perf_counter() - t0
            ref_m = MaskSet.from_records(ref, cfg.image_hw).masks
            same = len(ref_m) == len(ours) and bool(torch.equal(ref_m, ours.masks.cpu()))
            row = {
                "points_per_side": grid,
                "pred_iou_thresh": iou_t,
                "stability_score_thresh": stab_t,
                "use_m2m": m2m,
                "masks_upstream": len(ref),
                "masks_ours": len(ours),
                "identical_masks": same,
                "mean_best_iou": round(best_iou(ref_m, ours.masks.cpu()), 5),
                "upstream_s": round(t_ref, 2),
                "ours_s": round(t_ours, 2),
            }
            log(f"colour SAM 2 {row}")
            rows.append(row)
    return rows
