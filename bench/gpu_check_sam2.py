"""GPU check, SAM 2 section (issue 22; kept apart from ``bench/gpu_check.py``'s SAM sections).

For SAM 2.1 Hiera-L and Hiera-T (random weights), 32×32 points on a 1024×768 synthetic image, at two
operating points (sam2's default thresholds, and thresholds 0: every candidate kept, the worst case for
upsampling):

- upstream ``SAM2AutomaticMaskGenerator`` (fp32, as shipped);
- ours: ``MaskGenerator`` on the ``sam2_*`` spec modules (TorchEngines), fp32 and bf16 autocast (with the
  decoder's ``share_image``);

reporting steady-state seconds per image (after one warm-up), masks kept, peak GPU memory, ours-fp32
fidelity to upstream and bf16 fidelity to fp32 (mean best mask IoU, count ratio).

Usage (a CUDA machine with the ``[sam2]`` extra)::

    python bench/gpu_check_sam2.py --out "$OUT"          # writes $OUT/gpu_check_sam2.{json,md}
    python bench/gpu_check_sam2.py --smoke --out /tmp/x   # CPU, sam2_tiny, 4×4: every code path, seconds
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from pathlib import Path
from typing import Any

import torch

MODELS = ("sam2.1_hiera_l", "sam2.1_hiera_t")
POINTS = {"defaults": {"pred_iou_thresh": 0.8, "stability_score_thresh": 0.95}, "thresholds-0": {}}


def _peak_mib(device: torch.device) -> float | None:
    return round(torch.cuda.max_memory_allocated(device) / 2**20, 1) if device.type == "cuda" else None


def _timed(fn: Any, device: torch.device, repeats: int) -> tuple[Any, float]:
    fn()  # warm-up: lazy init, cuDNN autotune
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    t0 = time.perf_counter()
    for _ in range(repeats):
        out = fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return out, (time.perf_counter() - t0) / repeats


def check_model(
    variant: str, grid: int, hw: tuple[int, int], device: torch.device, repeats: int
) -> list[dict]:
    """Rows (one per operating point × pipeline) for one SAM 2 variant."""
    from zsplg_fast.bench.labeling import bench_image
    from zsplg_fast.bench.labeling_pipelines import best_iou
    from zsplg_fast.config.labeling import AmgConfig
    from zsplg_fast.engines.torch_engine import TorchEngine
    from zsplg_fast.export.specs import get_spec
    from zsplg_fast.labeling.amg import MaskGenerator
    from zsplg_fast.labeling.masks import MaskSet, upstream_sam2_generator
    from zsplg_fast.labeling.proposers import make_proposer
    from zsplg_fast.models import build_sam

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = build_sam(variant, device=device)
    image = bench_image(*hw, seed=0)
    rows = []
    for point, thresholds in POINTS.items():
        amg = AmgConfig(
            points_per_side=grid, **{"pred_iou_thresh": 0.0, "stability_score_thresh": 0.0, **thresholds}
        )
        up = upstream_sam2_generator(model, amg)
        ref, t_ref = _timed(lambda up=up: up.generate(image), device, repeats)
        ref_masks = MaskSet.from_records(ref, hw).masks
        row = {"model": variant, "point": point, "pipeline": "upstream fp32", "s_per_img": round(t_ref, 4)}
        rows.append({**row, "masks": len(ref), "peak_gpu_mib": _peak_mib(device)})
        masks_by: dict[str, torch.Tensor] = {}
        for name, autocast in (("ours fp32", "fp32"), ("ours bf16", "bf16")):
            if autocast == "bf16" and device.type != "cuda":
                continue
            # as the label command's torch backend binds it (labeling/engines.py): upstream's modules
            share = {"share_image": autocast != "fp32", "token_upscaling": False, "scale_first": False}
            engines = []
            for spec in ("sam2_encoder", "sam2_decoder_batched"):
                p = get_spec(spec).bind(model, **(share if spec == "sam2_decoder_batched" else {}))
                engines.append(
                    TorchEngine(p.module, p.inputs, p.outputs, device=str(device), autocast=autocast)
                )
            gen = MaskGenerator(*engines, amg, proposer=make_proposer("sam2", amg), sync_timings=True)
            res, t = _timed(lambda gen=gen: gen.generate_tensors(image), device, repeats)
            masks_by[name] = res.masks.cpu()
            base = ref_masks if autocast == "fp32" else masks_by["ours fp32"]
            row = {"model": variant, "point": point, "pipeline": name, "s_per_img": round(t, 4)}
            row |= {"masks": len(res), "peak_gpu_mib": _peak_mib(device)}
            row |= {
                "fidelity_to": "upstream" if autocast == "fp32" else "ours fp32",
                "mean_best_iou": round(best_iou(base, masks_by[name]), 5),
                "count_ratio": round(len(res) / max(1, len(base)), 4),
                "speedup_vs_upstream": round(t_ref / t, 2),
            }
            rows.append(row)
    return rows


COLUMNS = (
    ("model", "model"),
    ("thresholds", "point"),
    ("pipeline", "pipeline"),
    ("s/img", "s_per_img"),
    ("masks", "masks"),
    ("peak GPU MiB", "peak_gpu_mib"),
    ("mean best IoU", "mean_best_iou"),
    ("vs", "fidelity_to"),
    ("count ratio", "count_ratio"),
    ("× upstream", "speedup_vs_upstream"),
)


def render(report: dict[str, Any]) -> str:
    """The report as one Markdown table (to paste into a closing note)."""
    title = f"GPU check, SAM 2 ({report['device']}, {report['grid']}×{report['grid']}, {report['image_hw']})"
    lines = [title, "", "| " + " | ".join(c for c, _ in COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for r in report["rows"]:
        lines.append("| " + " | ".join(str(r.get(k, "")) for _, k in COLUMNS) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--smoke", action="store_true", help="CPU, sam2_tiny, 4x4, small image")
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args(argv)
    smoke = a.smoke or not torch.cuda.is_available()
    device = torch.device("cpu" if smoke else "cuda")
    models, grid, hw = (("sam2_tiny",), 4, (96, 128)) if smoke else (MODELS, 32, (768, 1024))
    name = "cpu (smoke)" if smoke else torch.cuda.get_device_name(0)
    report: dict[str, Any] = {"device": name, "grid": grid, "image_hw": list(hw), "rows": []}
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    for variant in models:
        try:
            report["rows"] += check_model(variant, grid, hw, device, 1 if smoke else a.repeats)
        except Exception as e:  # a model that fails is recorded, the next one still runs
            report.setdefault("failed", {})[variant] = f"{type(e).__name__}: {e}"
        (out / "gpu_check_sam2.json").write_text(json.dumps(report, indent=1))
        (out / "gpu_check_sam2.md").write_text(render(report))
    print(render(report))
    return report


if __name__ == "__main__":
    main()
