"""Export parity and ORT-CPU / torch-eager latency per artifact, on real-size architectures.

What it does, in one run:
1. saves random-weight checkpoints: SAM vit_b, CLIP ViT-B-16, a DeepLabV3+ ResNet-50 segmenter (21 classes);
2. runs ``zsplg-fast export all`` on them (the acceptance command, as a subprocess) with
   ``--classes voc``;
3. reads every sidecar: parity (max abs, cosine), export + validation time, size;
4. times each artifact in onnxruntime (CPU) and in eager PyTorch (the same spec module, rebuilt from the
   sidecar) side by side, alternating runs, after warm-up; reports medians and the ORT / torch ratio.
   For ``sam_decoder_batched`` it also times upstream's path (``PromptEncoder`` + ``MaskDecoder``,
   which tiles the embedding B times), the reference the batched wrapper replaces.

Usage (state the allocator; the 2 cores are shared, so be nice)::

    MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=100000000000 MALLOC_TOP_PAD_=1000000000 \\
      nice -n 10 .venv/bin/python bench/export_parity.py --work /tmp/zsplg-export-bench

Results: ``bench/results/export_parity.{json,md}``. Weights are random: latency does not depend on
them, parity is not an accuracy estimate.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
MALLOC = ("MALLOC_MMAP_MAX_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_")
# artifact → sizes of its symbolic axes for the latency runs (+ fixed values for some inputs)
LATENCY = {
    "sam_encoder": {"batch": 1},
    "sam_decoder": {"num_points": 2},
    "sam_decoder_batched": {"batch": 64, "num_points": 1},
    "clip_dense": {"batch": 1},
    "clip_text": {"batch": 32},
    "segmenter": {"batch": 1, "height": 512, "width": 512},
}


def save_checkpoints(work: Path) -> dict[str, Path]:
    """Random-weight checkpoints of the real architectures (the test helper's job, at full size)."""
    from zsplg_fast.models import (
        VOC_CLASSES,
        build_clip,
        build_sam,
        save_clip_checkpoint,
        save_sam_checkpoint,
    )
    from zsplg_fast.models.segmenter import build_segmenter, save_checkpoint

    work.mkdir(parents=True, exist_ok=True)
    paths = {"sam": work / "sam_vit_b_random.pth", "clip": work / "clip_vit_b_16_random.pt"}
    paths["segmenter"] = work / "segmenter_r50_random.pth"
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if not paths["sam"].exists():
            save_sam_checkpoint(build_sam("vit_b"), paths["sam"])
        if not paths["clip"].exists():
            save_clip_checkpoint(build_clip("ViT-B-16").model, paths["clip"])
        if not paths["segmenter"].exists():
            seg = build_segmenter("resnet50", len(VOC_CLASSES)).eval()
            save_checkpoint(paths["segmenter"], seg, class_names=[c[0] for c in VOC_CLASSES])
    return paths


def export_all(paths: dict[str, Path], out: Path) -> dict[str, Any]:
    """``zsplg-fast export all`` as a user runs it; returns (and saves beside ``out``) its wall time."""
    cmd = [sys.executable, "-m", "zsplg_fast.cli.main"]  # the `zsplg-fast` CLI of this checkout
    cmd += ["export", "all", "--sam", "vit_b", "--sam-checkpoint", str(paths["sam"])]
    cmd += ["--clip", "ViT-B-16", "--clip-pretrained", str(paths["clip"]), "--classes", "voc"]
    cmd += ["--segmenter-checkpoint", str(paths["segmenter"]), "--out", str(out), "--force"]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    record = {"wall_s": round(time.perf_counter() - t0, 1), "command": " ".join(cmd[1:]), "at": time.ctime()}
    (out.parent / "export_all.json").write_text(json.dumps(record))
    return record


def feeds_for(engine: Any, sizes: dict[str, int], seed: int = 0) -> dict[str, np.ndarray]:
    g = np.random.default_rng(seed)
    feeds: dict[str, np.ndarray] = {}
    for spec in engine.inputs:
        shape = [d if isinstance(d, int) else sizes[d] for d in spec.shape]
        if spec.dtype == "int64":
            feeds[spec.name] = g.integers(0, 49000, size=shape).astype(np.int64)
        else:
            feeds[spec.name] = g.standard_normal(shape).astype(np.float32)
    if "point_coords" in feeds:
        feeds["point_coords"] = (g.random(feeds["point_coords"].shape) * 1024).astype(np.float32)
        feeds["point_labels"] = np.ones(feeds["point_labels"].shape, np.float32)
    if "orig_im_size" in feeds:
        feeds["point_labels"][0, -1] = -1.0
        feeds.update(
            has_mask_input=np.zeros(1, np.float32), orig_im_size=np.array([768.0, 1024.0], np.float32)
        )
    return feeds


def side_by_side(runs: dict[str, Any], reps: int) -> dict[str, float]:
    """Median seconds of each callable, alternating them ``reps`` times after one warm-up each."""
    times: dict[str, list[float]] = {k: [] for k in runs}
    for fn in runs.values():
        fn()
    for _ in range(reps):
        for k, fn in runs.items():
            t0 = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def upstream_decoder(path: Path, feeds: dict[str, np.ndarray]) -> Any:
    """Upstream AMG's decoder call (predict_torch: PromptEncoder + MaskDecoder, multimask)."""
    from zsplg_fast.export.artifact import read_sidecar
    from zsplg_fast.export.sources import rebuild

    sam = rebuild(read_sidecar(path)["source"]).model
    emb = torch.from_numpy(feeds["image_embeddings"])
    pts = (torch.from_numpy(feeds["point_coords"]), torch.from_numpy(feeds["point_labels"]))

    def run() -> None:
        with torch.inference_mode():
            sparse, dense = sam.prompt_encoder(points=pts, boxes=None, masks=None)
            sam.mask_decoder(emb, sam.prompt_encoder.get_dense_pe(), sparse, dense, multimask_output=True)

    return run


def latency_one(name: str, out: Path, reps: int, threads: int) -> dict[str, Any]:
    """Time one artifact in torch eager and onnxruntime CPU, alternating (run in its own process)."""
    from zsplg_fast.engines.base import load_engine

    path = out / f"{name}.onnx"
    ort_engine = load_engine(path, intra_op_threads=threads, session_options={"enable_cpu_mem_arena": False})
    torch_engine = load_engine(path, backend="torch")
    feeds = feeds_for(ort_engine, LATENCY[name])
    ort_engine(feeds)  # onnxruntime's first 1-2 runs are slow (shared notes): one extra warm-up
    runs = {"torch": lambda: torch_engine(feeds), "ort": lambda: ort_engine(feeds)}
    if name == "sam_decoder_batched":
        runs["torch_upstream"] = upstream_decoder(path, feeds)
    med = side_by_side(runs, reps)
    shape = {k: list(v.shape) for k, v in feeds.items() if k in ("image", "point_coords", "token_ids")}
    row = {"artifact": name, "inputs": shape, **{f"{k}_s": round(v, 4) for k, v in med.items()}}
    row["ort_over_torch"] = round(med["ort"] / med["torch"], 3)
    if "torch_upstream" in med:
        row["ort_over_torch_upstream"] = round(med["ort"] / med["torch_upstream"], 3)
    return row


def latency(work: Path, reps: int, threads: int) -> list[dict[str, Any]]:
    """One subprocess per artifact: fresh memory each (vit_b at 1024 needs GBs of temporaries)."""
    rows = []
    for name in LATENCY:
        cmd = [sys.executable, __file__, "--latency-one", name, "--work", str(work)]
        cmd += ["--reps", str(reps), "--threads", str(threads)]
        res = subprocess.run(cmd, check=True, capture_output=True, text=True)
        row = json.loads(res.stdout.strip().splitlines()[-1])
        print(json.dumps(row), flush=True)
        rows.append(row)
    return rows


def machine(threads: int) -> dict[str, Any]:
    from zsplg_fast.export.artifact import library_versions

    text = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    cpu = next((ln.split(":", 1)[1].strip() for ln in text.splitlines() if ln.startswith("model name")), "?")
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "load_average_at_start": os.getloadavg(),
        "python": platform.python_version(),
        "torch_threads": threads,
        "ort_intra_op_threads": threads,
        "ort_session_options": {"enable_cpu_mem_arena": False, "graph_optimization_level": "all"},
        "malloc": {k: os.environ.get(k, "glibc default") for k in MALLOC},
        "versions": library_versions(),
        "weights": "random (seeded); latency does not depend on them",
    }


def write_md(result: dict[str, Any], path: Path) -> None:
    m = result["machine"]
    lines = [
        "# Export parity and ORT-CPU / torch-eager latency",
        "",
        f"Machine: {m['cpu']}, {m['cores']} vCPUs (shared; load average at start "
        f"{m['load_average_at_start'][0]:.1f}), "
        f"torch threads {m['torch_threads']}, ORT intra-op threads {m['ort_intra_op_threads']} "
        f"(ORT CPU arena off: both allocate through the same malloc, or the pair does not fit in memory); "
        f"malloc {m['malloc']}. Versions: {m['versions']}. Weights: {m['weights']}.",
        "",
        f"`zsplg-fast export all` (vit_b SAM, ViT-B-16 CLIP at 448, DeepLabV3+ R50, VOC text embeddings): "
        f"{result['export_all']['wall_s']:.0f} s wall ({result['export_all']['at']}).",
        "",
        "## Parity (worst output, all validation sets), export time, size",
        "",
        "| artifact | exporter | opset | max abs | cosine | export s | validate s | size MB |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in result["parity"]:
        lines.append(
            f"| {r['artifact']} | {r['exporter']} | {r['opset']} | {r['max_abs']:.2e} | {r['cosine']:.10f} | "
            f"{r['export_s']:.1f} | {r['validate_s']:.1f} | {r['size_mb']:.1f} |"
        )
    lines += [
        "",
        "## Latency, medians of alternating runs after warm-up",
        "",
        "| artifact | inputs | torch eager s | ORT CPU s | ORT / torch |",
        "|---|---|---|---|---|",
    ]
    for r in result["latency"]:
        lines.append(
            f"| {r['artifact']} | {r['inputs']} | {r['torch_s']:.3f} | {r['ort_s']:.3f} | "
            f"{r['ort_over_torch']:.2f} |"
        )
        if "torch_upstream_s" in r:
            lines.append(
                f"| {r['artifact']} vs upstream PromptEncoder+MaskDecoder | {r['inputs']} | "
                f"{r['torch_upstream_s']:.3f} | {r['ort_s']:.3f} | {r['ort_over_torch_upstream']:.2f} |"
            )
    path.write_text("\n".join(lines) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--work", type=Path, default=Path("/tmp/zsplg-export-bench"))
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--skip-export", action="store_true", help="reuse the artifacts in --work/export")
    ap.add_argument("--results", type=Path, default=ROOT / "bench" / "results")
    ap.add_argument("--latency-one", help=argparse.SUPPRESS)
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    torch.set_num_threads(args.threads)
    if args.latency_one:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            row = latency_one(args.latency_one, args.work / "export", args.reps, args.threads)
        print(json.dumps(row))
        return
    from zsplg_fast.export.artifact import read_sidecar
    from zsplg_fast.utils.io import atomic_write_json

    info = machine(args.threads)
    paths = save_checkpoints(args.work)
    out = args.work / "export"
    run = (
        json.loads((args.work / "export_all.json").read_text())
        if args.skip_export
        else export_all(paths, out)
    )
    parity = []
    for name in ("sam_encoder", "sam_decoder", "sam_decoder_batched", "clip_dense", "clip_text", "segmenter"):
        s = read_sidecar(out / f"{name}.onnx")
        outs = s["validation"]["outputs"]
        parity.append(
            {
                "artifact": name,
                "exporter": s["exporter"],
                "opset": s["opset"],
                "max_abs": max(o["max_abs"] for o in outs),
                "cosine": min(o["cosine"] for o in outs),
                "per_output": outs,
                "export_s": s["export_time_s"],
                "validate_s": s["validate_time_s"],
                "size_mb": s["size_bytes"] / 1e6,
            }
        )
    result = {
        "machine": info,
        "export_all": run,
        "parity": parity,
        "latency": latency(args.work, args.reps, args.threads),
    }
    atomic_write_json(args.results / "export_parity.json", result)
    write_md(result, args.results / "export_parity.md")
    print((args.results / "export_parity.md").read_text())


if __name__ == "__main__":
    main()
