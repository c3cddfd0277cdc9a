"""The GPU check's ``label:<sam>`` sections: the shipped ``zsplg-fast label`` end to end.

Each run is ``label_dataset(cfg)`` (what the ``label`` command calls) on synthetic images, SAM ``<sam>``
+ CLIP ViT-B-16, 32×32 points, random weights, labels written into a scratch folder outside the repo.
Per model and per operating point (``default`` thresholds 0.88 / 0.95, and ``thr0``: every candidate
kept, the worst case for upsampling and RLE):

- ``fast``: the defaults a user gets (``precision: auto``, ``compile: auto``: bf16, and no compile for a
  job under 100 images), ``fast_fp32``: ``--precision fp32 --compile off``;
- ``upstream``: ``--masks upstream`` (segment-anything's ``SamAutomaticMaskGenerator`` + dense CLIP) on
  the first images of the same set, in the same process;
- last, at the default thresholds, ``fast_compile``: ``--compile on`` (Inductor's cache in a scratch
  folder: a cold compile).

Reported per run: s/img at steady state (median gap between finished images after the warm-up ones),
masks kept per image, peak GPU memory; per operating point: bf16 vs fp32 and fast vs upstream mean best
IoU (masks decoded from the meta RLEs). Each finished run lands in ``gpu_sections.PARTIAL`` at once, so a
section stopped at its cap reports what it did.

The random-weight SAM is built once per section and reused by every run (:func:`_cache_sam_builds`):
building vit_h's 632 M random parameters takes seconds per run, which the device budget cannot spare and
which no user pays (they load a checkpoint); no run modifies the module (autocast and ``torch.compile``
wrap it). Each run still builds its own labeler, engines and CLIP, as ``label`` does.
"""

from __future__ import annotations

import itertools
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import gpu_sections

OPERATING_POINTS: dict[str, dict[str, Any]] = {
    "default": {},  # AmgConfig's: pred_iou 0.88, stability 0.95
    "thr0": {"amg.pred_iou_thresh": 0.0, "amg.stability_score_thresh": 0.0},
}
FIDELITY_IMAGES = 20  # images per fidelity figure (decoding RLEs and matching masks costs host time)
RUNS: dict[str, dict[str, Any]] = {
    "fast": {},  # precision auto, compile auto
    "fast_fp32": {"label.precision": "fp32", "label.compile": "off"},
    "upstream": {"label.masks": "upstream"},
}


def _register_smoke_clip(root: Path) -> str:
    """A 2-layer open_clip ViT (the tests' tiny config) for the CPU smoke run."""
    from zsplg_fast.models import open_clip_config_builder, register_clip_model

    cfg = {
        "embed_dim": 64,
        "vision_cfg": {"image_size": 64, "layers": 2, "width": 64, "patch_size": 16, "head_width": 32},
        "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
    }
    path = root / "gpu-check-tiny-clip.json"
    path.write_text(json.dumps(cfg))
    register_clip_model("gpu-check-tiny-clip", open_clip_config_builder(path))
    return "gpu-check-tiny-clip"


def _cache_sam_builds() -> dict[tuple[str, str], Any]:
    """Make ``zsplg_fast.models.build_sam`` (imported at call time by the labeler's builder) return one
    module per (variant, device) in this process. Returns the cache (tests read it)."""
    import zsplg_fast.models as models

    build = getattr(models.build_sam, "__wrapped__", models.build_sam)
    cache: dict[tuple[str, str], Any] = {}

    def cached(variant: str, checkpoint: Any = None, device: Any = "cpu") -> Any:
        if checkpoint is not None:
            return build(variant, checkpoint, device=device)
        key = (variant, str(device))
        if key not in cache:
            cache[key] = build(variant, None, device=device)
        return cache[key]

    cached.__wrapped__ = build  # type: ignore[attr-defined]
    models.build_sam = cached  # type: ignore[assignment]
    return cache


def _steady(stamps: list[float], warmup: int) -> float | None:
    gaps = [b - a for a, b in itertools.pairwise(stamps)][warmup:]
    return round(statistics.median(gaps), 4) if gaps else None


def _masks_of(meta: Path, dev: Any) -> Any:
    """(K, h, w) bool masks of one image, decoded from its meta RLEs, on ``dev``."""
    import torch

    from zsplg_fast.utils.rle import decode

    rec = json.loads(meta.read_text())
    h, w = rec["work_size"]
    rles = [m["rle"] for m in rec["masks"]]
    masks = torch.stack([decode(r) for r in rles]) if rles else torch.zeros((0, h, w), dtype=torch.bool)
    return masks.to(dev)


def _fidelity(ref_dir: Path, got_dir: Path, dev: Any, limit: int = FIDELITY_IMAGES) -> dict[str, Any]:
    """Mean over the first ``limit`` shared images of ``best_iou`` (each ref mask matched to its best got
    mask; on ``dev``: a (K, HW) @ (HW, K') product per image)."""
    from zsplg_fast.bench.labeling_pipelines import best_iou

    ref = {p.stem: p for p in sorted((ref_dir / "meta").glob("*.json"))}
    ids = [p.stem for p in sorted((got_dir / "meta").glob("*.json")) if p.stem in ref][:limit]
    per = [best_iou(_masks_of(ref[i], dev), _masks_of(got_dir / "meta" / f"{i}.json", dev)) for i in ids]
    return {"images": len(ids), "mean_best_iou": round(sum(per) / len(per), 5) if per else None}


def _run(cfg: Any, n: int, dev: Any) -> dict[str, Any]:
    import torch

    from zsplg_fast.labeling.run import label_dataset

    stamps: list[float] = []
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    t0 = time.perf_counter()
    summary = label_dataset(cfg, on_progress=lambda done, total, sid: stamps.append(time.perf_counter()))
    wall = time.perf_counter() - t0
    out = Path(cfg.label.out)
    manifest = json.loads((out / "manifest.json").read_text())
    metas = [json.loads(p.read_text()) for p in sorted((out / "meta").glob("*.json"))]
    warmup = min(5, max(1, n // 4)) if n > 2 else 0
    return {
        "images": summary.labeled,
        "failed": summary.failed,
        "wall_s": round(wall, 2),
        "first_image_s": round(stamps[0] - t0, 2) if stamps else None,
        "steady_s_per_img": _steady(stamps, warmup),
        "warmup_images": warmup,
        "masks_per_image": round(sum(m["num_masks"] for m in metas) / max(1, len(metas)), 2),
        "peak_gpu_mib": gpu_sections._peak_mib(dev),
        "run_mode": manifest.get("run_mode"),
        "stage_s_per_img": {k: round(v / max(1, summary.labeled), 4) for k, v in summary.timings_s.items()},
    }


def section_label(smoke: bool, dev: Any, variant: str) -> dict:
    """``label`` end to end on ``n`` synthetic images per run; see the module docstring."""
    import os

    from zsplg_fast.config import load_config
    from zsplg_fast.data.synthetic import generate_dataset
    from zsplg_fast.models.sam import sam_family

    smoke_sam = {"sam": "tiny", "sam2": "sam2_tiny"}[sam_family(variant)]  # the family's code path
    sam, n, k_up, size, grid = (smoke_sam, 4, 2, 96, 4) if smoke else (variant, 50, 3, 768, 32)
    out: dict[str, Any] = gpu_sections.PARTIAL
    out |= {
        "variant": sam,
        "clip": "ViT-B-16",
        "grid": grid,
        "images": n,
        "upstream_images": k_up,
        "runs": {},
    }
    sams = _cache_sam_builds()
    with tempfile.TemporaryDirectory(prefix="zsplg-gpu-label-") as tmp:
        root = Path(tmp)
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(root / "inductor")  # cold: the honest first compile
        clip = _register_smoke_clip(root) if smoke else "ViT-B-16"
        out["clip"] = clip
        world = root / "world"
        generate_dataset(world, num=n, num_classes=4, seed=0, size=size, val_fraction=0.0)
        ids = sorted(p.stem for p in (world / "JPEGImages").glob("*.jpg"))[:n]
        split_all, split_up = root / "all.txt", root / "upstream.txt"
        for path, chosen in ((split_all, ids), (split_up, ids[:k_up])):
            path.write_text("".join(f"JPEGImages/{i}.jpg\n" for i in chosen))
        base = {
            "data.source": f"synthetic:{world}",
            "classify.classes": str(world / "classes.txt"),
            "sam.variant": sam,
            "clip.model": clip,
            "amg.points_per_side": grid,
            "label.device": str(dev),
            "label.io_workers": 2,
            **({"clip.image_size": 64, "clip.gem_depth": 1} if smoke else {}),
        }
        # upstream at thresholds 0 last: it RLE-encodes every candidate in Python (slow on noisy masks)
        plan = [("default", r) for r in RUNS] + [("thr0", "fast"), ("thr0", "fast_fp32")]
        # smoke: no compile run (inductor on a CPU compiles C++ for minutes; the code path is the same)
        plan += ([] if smoke else [("default", "fast_compile")]) + [("thr0", "upstream")]
        for op, run in plan:
            over = {**base, **OPERATING_POINTS[op], **RUNS.get(run, {"label.compile": "on"})}
            over["label.out"] = str(root / f"{op}-{run}")
            upstream = run == "upstream"
            over["data.split"] = str(split_up if upstream else split_all)
            runs = out["runs"].setdefault(op, {})
            try:  # one failing run (say, out of memory at thresholds 0) must not hide the others
                rec = _run(load_config(overrides=over), k_up if upstream else n, dev)
            except Exception as e:
                runs[run] = {"status": "error", "error": f"{type(e).__name__}: {e}"[:500]}
                out["failed"] = [*out.get("failed", []), f"{op}/{run}"]
                continue
            runs[run] = rec
            fid = runs.setdefault("fidelity", {})
            ok = {r for r, v in runs.items() if isinstance(v, dict) and "steady_s_per_img" in v}
            if run == "fast_fp32" and "fast" in ok:  # while the label folders exist
                fid["bf16_vs_fp32"] = _fidelity(root / f"{op}-fast_fp32", root / f"{op}-fast", dev)
            if upstream and "fast_fp32" in ok:
                fid["fp32_vs_upstream"] = _fidelity(root / f"{op}-upstream", root / f"{op}-fast_fp32", dev)
            if upstream and "fast" in ok:
                up, fast = rec["steady_s_per_img"], runs["fast"]["steady_s_per_img"]
                if up and fast:
                    runs["speedup_fast_vs_upstream"] = round(up / fast, 2)
            out["finished"] = [*out.get("finished", []), f"{op}/{run}"]
    out["sam_builds"] = len(sams)  # one per section: every run reused it
    return out
