"""End-to-end labeling benchmark: upstream AMG + eager CLIP (A) vs ours on torch (B, B0 before decoder
sharing), ORT (C), ORT INT8 (D), torch bf16 (E); speed on vit_b, fidelity on the trained toy models.

A thin wrapper over :func:`zsplg_fast.bench.labeling.bench_labeling` (also ``zsplg-fast bench labeling``).
The glibc allocator is tuned for both sides (shared measurements): when the ``MALLOC_*`` variables are
not set, this script re-executes itself with them (``--default-malloc`` keeps glibc's defaults).

Usage (2 shared cores: be nice; a 32×32 upstream vit_b image takes minutes)::

    nice -n 5 .venv/bin/python bench/labeling.py --grids 16 32 --images 2 --precision int8

Results: ``bench/results/labeling_cpu.{json,md}`` (``--out`` to change).
"""

from __future__ import annotations

import argparse
import os
import sys

TUNED = {"MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": "100000000000", "MALLOC_TOP_PAD_": "1000000000"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--grids", type=int, nargs="+", default=[16, 32], help="points per side")
    ap.add_argument("--images", type=int, default=2)
    ap.add_argument("--size", type=int, nargs=2, default=[768, 1024], metavar=("H", "W"))
    ap.add_argument("--precision", choices=("fp32", "int8"), default="fp32", help="int8 adds variant D")
    ap.add_argument("--variants", default="A,B,C", help="comma list among A,B,B0,C,D,E (A is required)")
    ap.add_argument("--sam", default="vit_b")
    ap.add_argument("--clip", default="ViT-B-16")
    ap.add_argument("--clip-size", type=int, default=448)
    ap.add_argument("--threads", type=int, default=None, help="torch and ORT threads (default: all cores)")
    ap.add_argument(
        "--prompt-batch", type=int, default=0, help="ours; 0 = the library default (cache-sized on CPU)"
    )
    ap.add_argument(
        "--decoder-attention",
        default="folded",
        help="C/D's exported decoder: folded (onnxruntime CPU) | fused",
    )
    ap.add_argument("--export-dir", default=None, help="where ONNX artifacts go (default: a temp dir)")
    ap.add_argument("--no-colour-fidelity", action="store_true")
    ap.add_argument("--toy-images", type=int, default=4, help="fidelity on the trained toy models (0: skip)")
    ap.add_argument("--toy-grid", type=int, default=16, help="AMG points per side for the toy mask fidelity")
    ap.add_argument("--out", default="bench/results/labeling_cpu")
    ap.add_argument("--note", default="")
    ap.add_argument("--default-malloc", action="store_true", help="do not re-exec with tuned glibc malloc")
    args = ap.parse_args()
    if not args.default_malloc and any(os.environ.get(k) != v for k, v in TUNED.items()):
        os.execve(sys.executable, [sys.executable, *sys.argv], {**os.environ, **TUNED})
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    from zsplg_fast.bench.labeling import LabelBenchConfig, bench_labeling

    cfg = LabelBenchConfig(
        grids=tuple(args.grids),
        images=args.images,
        image_hw=(args.size[0], args.size[1]),
        precision=args.precision,
        sam_variant=args.sam,
        clip_model=args.clip,
        clip_size=args.clip_size,
        prompt_batch=args.prompt_batch or None,
        threads=args.threads,
        export_dir=args.export_dir,
        decoder_attention=args.decoder_attention,
        colour_fidelity=not args.no_colour_fidelity,
        toy_images=args.toy_images,
        toy_grid=args.toy_grid,
        out=args.out,
        note=args.note,
        variants=tuple(v.strip() for v in args.variants.split(",") if v.strip()),
    )
    bench_labeling(cfg, log=lambda m: print(m, flush=True))


if __name__ == "__main__":
    main()
