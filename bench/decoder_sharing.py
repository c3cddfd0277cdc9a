"""Decoder seconds per image before / after sharing the first block's prompt-independent work.

Before (B0): the one-piece ``sam_decoder_batched`` (image-side projections once per decoder CALL).
After (B): ``sam_decoder_image`` once per image + ``sam_decoder_shared`` per call. Both as TorchEngines
on the same random embedding and the same grid of point prompts, at the library's automatic CPU prompt
batch, alternated round by round (ABAB...) so that load changes hit both; also their max abs difference.
The glibc allocator is tuned as in the Makefile (the script re-executes itself with it).

Usage: ``nice -n 10 .venv/bin/python bench/decoder_sharing.py --sam vit_b --grid 32 --rounds 3``
Results: ``bench/results/decoder_sharing_cpu.{json,md}``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

TUNED = {"MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": "100000000000", "MALLOC_TOP_PAD_": "1000000000"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sam", default="vit_b")
    ap.add_argument("--grid", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default="bench/results/decoder_sharing_cpu")
    args = ap.parse_args()
    if any(os.environ.get(k) != v for k, v in TUNED.items()):
        os.execve(sys.executable, [sys.executable, *sys.argv], {**os.environ, **TUNED})
    import warnings

    import numpy as np
    import torch

    from zsplg_fast.bench.machine import machine_info, runtime_settings
    from zsplg_fast.engines.torch_engine import TorchEngine
    from zsplg_fast.export.specs import get_spec
    from zsplg_fast.labeling.amg_ops import default_prompt_batch
    from zsplg_fast.models import build_sam
    from zsplg_fast.utils.io import atomic_write_json, atomic_write_text

    torch.set_num_threads(args.threads)
    warnings.simplefilter("ignore")
    sam = build_sam(args.sam)
    eng = {
        n: get_spec(n).bind(sam) for n in ("sam_decoder_batched", "sam_decoder_image", "sam_decoder_shared")
    }
    eng = {n: TorchEngine(p.module, p.inputs, p.outputs, name=n) for n, p in eng.items()}
    g, c, s = (
        sam.prompt_encoder.image_embedding_size[0],
        sam.prompt_encoder.embed_dim,
        sam.image_encoder.img_size,
    )
    emb = torch.randn(1, c, g, g, generator=torch.Generator().manual_seed(0)).numpy()
    side = (np.arange(args.grid) + 0.5) / args.grid
    pts = (np.stack(np.meshgrid(side, side), -1).reshape(-1, 1, 2) * s).astype(np.float32)
    batch = default_prompt_batch(torch.device("cpu"), (g, g), c)
    labels = np.ones((batch, 1), np.float32)

    def before() -> list:
        return [
            eng["sam_decoder_batched"](
                {
                    "image_embeddings": emb,
                    "point_coords": pts[i : i + batch],
                    "point_labels": labels[: len(pts[i : i + batch])],
                }
            )["low_res_masks"]
            for i in range(0, len(pts), batch)
        ]

    def after() -> list:
        shared = eng["sam_decoder_image"]({"image_embeddings": emb})
        return [
            eng["sam_decoder_shared"](
                {
                    **shared,
                    "point_coords": pts[i : i + batch],
                    "point_labels": labels[: len(pts[i : i + batch])],
                }
            )["low_res_masks"]
            for i in range(0, len(pts), batch)
        ]

    times: dict[str, list[float]] = {"before": [], "after": []}
    outs = {}
    load0 = os.getloadavg()
    for _ in range(args.rounds):
        for name, fn in (("before", before), ("after", after)):
            t0 = time.perf_counter()
            outs[name] = fn()
            times[name].append(time.perf_counter() - t0)
            print(name, round(times[name][-1], 2), flush=True)
    diff = max(float(np.abs(a - b).max()) for a, b in zip(outs["before"], outs["after"], strict=True))
    med = {k: round(statistics.median(v), 3) for k, v in times.items()}
    best = {k: round(min(v), 3) for k, v in times.items()}  # the least disturbed run of each (shared cores)
    report = {
        "benchmark": "decoder_sharing",
        "sam": args.sam,
        "grid": args.grid,
        "prompts_per_image": len(pts),
        "prompt_batch": batch,
        "rounds": args.rounds,
        "seconds_per_image": med,
        "best_seconds_per_image": best,
        "speedup_best": round(best["before"] / best["after"], 3),
        "runs_s": {k: [round(x, 3) for x in v] for k, v in times.items()},
        "speedup": round(med["before"] / med["after"], 3),
        "max_abs_low_res_masks_before_vs_after": diff,
        "machine": machine_info(),
        "settings": runtime_settings(ort_threads=args.threads),
        "load_average_start_end": [list(load0), list(os.getloadavg())],
    }
    out = Path(args.out)
    atomic_write_json(out.with_suffix(".json"), report)
    runs = report["runs_s"]
    md = [
        f"# Decoder seconds per image before / after sharing ({args.sam}, {args.grid}×{args.grid} prompts)",
        "",
        f"{len(pts)} single-point prompts against one random embedding, {batch} prompts per decoder call "
        f"(the library's automatic CPU batch), torch threads {args.threads}, tuned glibc malloc, "
        f"{args.rounds} alternated rounds (median). "
        f"Load average start/end: {report['load_average_start_end']}.",
        "",
        "| decoder | s/image (best run) | median | runs (s) |",
        "|---|---|---|---|",
        f"| before: sam_decoder_batched (image side once per call) | {best['before']} | {med['before']} | "
        f"{runs['before']} |",
        f"| after: sam_decoder_image once + sam_decoder_shared | {best['after']} | {med['after']} | "
        f"{runs['after']} |",
        "",
        f"Speed-up {report['speedup_best']}× on the best runs ({report['speedup']}× on medians: on 2 "
        "shared cores other jobs slow single runs by 2-3×, so the best run is the load-robust figure); "
        "outputs equal "
        f"(max abs {diff}).",
        "",
    ]
    atomic_write_text(out.with_suffix(".md"), "\n".join(md))
    print("\n".join(md))


if __name__ == "__main__":
    main()
