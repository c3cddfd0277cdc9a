"""Precision fidelity on this CPU: fp16 and int8 precision ONNX (export/precision.py) against fp32.

Three parts, each optional, written together to ``bench/results/precision_fidelity.{json,md}``:

- ``toy``: the trained toy SAM + toy CLIP label ``--val`` toy-world val images through fp32, fp16 and
  int8 ONNX on onnxruntime CPU (the ``label --backend ort`` engines). int8 is calibrated on the feeds the
  fp32 engines saw while labeling ``--calib`` images of the labeled split. Reports per artifact the
  cosine / max abs against fp32 PyTorch (worst over the feeds recorded on the val images), and end to
  end the mask fidelity (mean best IoU of the fp32 masks, counted per mask), mask count ratio and
  label mIoU difference;
- ``real``: per-tensor parity of the real-size architectures (vit_b encoder and batched decoder,
  ViT-B-16 GEM dense and text towers, DeepLabV3+ ResNet-50), random weights, on the specs' validation
  inputs; int8 calibrated on seeded random feeds (so these int8 figures are parity, not accuracy);
- ``deploy``: ``zsplg_fast.deploy.deploy`` of a trained toy segmenter (``--segmenter``, e.g. the
  ``final.pth`` of ``zsplg-fast demo --scale ci``) at fp16 and int8 on the CI toy world's val split.

Run once, alone, niced (2 cores)::

    MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=100000000000 MALLOC_TOP_PAD_=1000000000 \\
      nice -n 10 .venv/bin/python bench/precision_fidelity.py --parts toy,deploy,real \\
      --segmenter demo_out/run/03-final-*/final.pth
"""

from __future__ import annotations

import argparse
import json
import os
import time
import warnings
from pathlib import Path
from typing import Any

import torch

PRECISIONS = ("fp16", "int8")


def _parity_rows(model_set: str, name: str, prec: str, par: dict[str, Any], extra: dict) -> dict:
    return {"models": model_set, "artifact": name, "precision": prec, **par, **extra}


def toy_part(work: Path, n_val: int, n_calib: int) -> dict[str, Any]:
    from zsplg_fast.bench.precision_fidelity import (
        LABEL_ARTIFACTS,
        compare_labels,
        export_toy,
        label_toy,
        ort_label_engines,
        output_parity,
        toy_setup,
    )
    from zsplg_fast.data.synthetic import TOY_WORLD, render_split_sample
    from zsplg_fast.engines.ort import OrtEngine
    from zsplg_fast.export.artifact import read_sidecar
    from zsplg_fast.export.precision import precision_artifact
    from zsplg_fast.export.specs import get_spec

    setup = toy_setup()
    fp32 = export_toy(setup, work / "toy")
    calib_imgs = [render_split_sample(TOY_WORLD, "labeled", i).image for i in range(n_calib)]
    calib = label_toy(setup, ort_label_engines(fp32), calib_imgs, record=64)
    val = [render_split_sample(TOY_WORLD, "val", i) for i in range(n_val)]
    images, gts = [s.image for s in val], [s.label for s in val]
    t0 = time.perf_counter()
    ref = label_toy(setup, ort_label_engines(fp32), images, record=4)
    fp32_s = time.perf_counter() - t0
    opts = {"sam_encoder": {}, "sam_decoder_batched": {}}
    opts["clip_dense"] = {"image_size": setup.cfg.clip.image_size, "gem_depth": setup.cfg.clip.gem_depth}
    mods = {"sam_encoder": setup.sam, "sam_decoder_batched": setup.sam, "clip_dense": setup.clip}
    rows, e2e = [], {}
    for prec in PRECISIONS:
        paths = {}
        for k in LABEL_ARTIFACTS:
            t1 = time.perf_counter()
            feeds_k = calib.feeds[k] if prec == "int8" else None
            art = precision_artifact(fp32[k], prec, calibration=feeds_k, force=True)  # fp32 re-exported
            paths[k] = art.path
            p = get_spec(k).bind(mods[k], **opts[k])
            side = read_sidecar(art.path)
            eng = OrtEngine(art.path, optimization=side["onnxruntime_cpu_optimization"])
            feeds = [{n: torch.from_numpy(v) for n, v in f.items()} for f in ref.feeds[k]]
            par = output_parity(p.module, [o.name for o in p.outputs], eng, feeds)
            extra = {
                "feeds_are": "recorded while labeling toy val images",
                "make_s": time.perf_counter() - t1,
            }
            rows.append(_parity_rows("toy (trained)", k, prec, par, extra))
        t2 = time.perf_counter()
        ours = label_toy(setup, ort_label_engines(paths), images)
        e2e[prec] = {**compare_labels(ref, ours, gts, setup.num_classes), "label_s": time.perf_counter() - t2}
        print(prec, json.dumps(e2e[prec]), flush=True)
    return {
        "parity": rows,
        "labeling": e2e,
        "fp32_label_s": fp32_s,
        "val_images": n_val,
        "calib_images": n_calib,
        "calib_feeds": {k: len(v) for k, v in calib.feeds.items()},
    }


def real_part(work: Path, names: list[str], n_calib: int = 4) -> list[dict[str, Any]]:
    from zsplg_fast.bench.precision_fidelity import output_parity
    from zsplg_fast.engines.ort import OrtEngine
    from zsplg_fast.export.artifact import Artifact
    from zsplg_fast.export.onnx import export_onnx
    from zsplg_fast.export.precision import precision_artifact, probe_feeds
    from zsplg_fast.export.specs import get_spec
    from zsplg_fast.models import build_clip, build_sam
    from zsplg_fast.models.segmenter import build_segmenter

    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        built: dict[str, Any] = {}
        if {"sam_encoder", "sam_decoder_batched"} & set(names):
            built["sam"] = build_sam("vit_b")
        if {"clip_dense", "clip_text"} & set(names):
            built["clip"] = build_clip("ViT-B-16")
        if "segmenter" in names:
            built["segmenter"] = build_segmenter("resnet50", 21).eval()
    jobs = {
        "sam_encoder": ("sam", {"validation_batches": (1,)}),
        "sam_decoder_batched": ("sam", {}),
        "clip_dense": ("clip", {"validation_batches": (1,)}),
        "clip_text": ("clip", {}),
        "segmenter": ("segmenter", {}),
    }
    partial = work / "real_partial.json"
    kept = json.loads(partial.read_text()) if partial.is_file() else []
    rows = [r for r in kept if r["artifact"] not in names]  # artifacts measured by an earlier run
    for name in names:
        fam, opts = jobs[name]
        p = get_spec(name).bind(built[fam], **opts)
        path = work / "real" / f"{name}.onnx"
        t0 = time.perf_counter()
        art = Artifact.open(path) if path.with_suffix(".json").is_file() else export_onnx(p, work / "real")
        print(name, "fp32 export", round(time.perf_counter() - t0, 1), flush=True)
        # onnxruntime's calibrator keeps every intermediate of every batch: vit_b's encoder needs ~12 GB
        # per batch, so give it --real-calib 1 on a 24 GB host
        calib = [probe_feeds(art, seed) for seed in range(2, 2 + n_calib)]
        for prec in PRECISIONS:
            t1 = time.perf_counter()
            low = precision_artifact(art.path, prec, calibration=calib if prec == "int8" else None)
            make_s = time.perf_counter() - t1
            eng = OrtEngine(
                low.path,
                optimization=low.sidecar["onnxruntime_cpu_optimization"],
                session_options={"enable_cpu_mem_arena": False},  # vit_b: the arena took 19 GB, OOM
            )
            par = output_parity(p.module, [o.name for o in p.outputs], eng, p.validation[:2])
            extra = {"feeds_are": "spec validation inputs (random)", "make_s": make_s}
            rows.append(_parity_rows("real-size (random weights)", name, prec, par, extra))
            print(
                name, prec, json.dumps({k: rows[-1][k] for k in ("cosine", "max_abs", "make_s")}), flush=True
            )
            partial.write_text(json.dumps(rows))  # a killed run keeps what it did
    return rows


def deploy_part(work: Path, checkpoint: Path, threads: int | None) -> dict[str, Any]:
    from zsplg_fast.config.bench import DeployConfig
    from zsplg_fast.config.loader import from_dict
    from zsplg_fast.data.synthetic import make_toy_world
    from zsplg_fast.deploy import deploy
    from zsplg_fast.utils.io import sha256_file

    world = work / "toy_world_ci"
    if not (world / "world.json").is_file():
        make_toy_world(world, "ci")
    out = {"checkpoint_sha256": sha256_file(checkpoint)}
    for prec in PRECISIONS:
        cfg = {
            "checkpoint": str(checkpoint),
            "precision": prec,
            "calib": f"synthetic:{world}",
            "calib_split": "unlabeled",
            "calib_images": 32,
            "val": f"synthetic:{world}",
            "val_split": "val",
            "max_miou_drop": 100.0,  # measure, do not refuse
            "latency_size": "256",
            "latency_budget_s": 3.0,
            "threads": threads,
            "out": str(work / f"deploy-{prec}"),
            "force": True,
        }
        r = deploy(from_dict(DeployConfig, cfg))
        out[prec] = {k: r["miou"][k] for k in ("reference", "deployed", "drop_points", "images")}
        out[prec]["speedup_vs_fp32_ort"] = r["latency"]["speedup_vs_fp32_ort"]
        print("deploy", prec, json.dumps(out[prec]), flush=True)
    return out


def markdown(s: dict[str, Any]) -> str:
    lines = [
        "# Precision fidelity: fp16 and int8 ONNX against fp32 (onnxruntime CPU)",
        "",
        f"{s['machine']}; onnxruntime {s['versions']['onnxruntime']}, nvidia-modelopt "
        f"{s['versions']['nvidia-modelopt']}; 1-min load average at the end {s['load_avg_1m']}. fp16/bf16: "
        "ModelOpt AutoCast (norms, softmax, reductions fp32; fp32 I/O); int8: onnxruntime quantize_static "
        "QDQ, symmetric, per-channel, QuantizeBias=False, weight MatMuls only (export/precision.py).",
        "",
    ]
    toy = s.get("toy")
    if toy:
        lines += [
            f"## End to end: toy SAM + toy CLIP labeling, {toy['val_images']} toy-world val images",
            "",
            f"int8 calibrated on the engine feeds of {toy['calib_images']} labeled-split images "
            f"({toy['calib_feeds']}). Mask fidelity: each fp32 mask's best IoU with any mask of the "
            "reduced run, averaged over all fp32 masks. Label mIoU against ground truth (%).",
            "",
            "| precision | mean best IoU | worst image | masks fp32 → ours | count ratio | mIoU fp32 "
            "| mIoU ours | diff (points) |",
            "|---|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for p, r in toy["labeling"].items():
            lines.append(
                f"| {p} | {r['mean_best_iou']:.4f} | {r['worst_image_best_iou']:.4f} | {r['masks_ref']} → "
                f"{r['masks_ours']} | {r['count_ratio']:.3f} | {r['miou_ref']:.2f} | {r['miou_ours']:.2f} | "
                f"{r['miou_diff_points']:+.2f} |"
            )
        lines += [
            "",
            "CI floors (tests/bench/test_precision_fidelity.py, 4 images): fp16 mean best IoU ≥ 0.98 ",
        ]
        lines[-1] += "and |mIoU diff| ≤ 0.5; int8 |mIoU diff| ≤ 1.0."
        lines.append("")
    parity = (toy or {}).get("parity", []) + s.get("real", [])
    if parity:
        lines += [
            "## Per artifact: onnxruntime CPU against fp32 PyTorch (worst over the feeds)",
            "",
            "| models | artifact | precision | feeds | worst cosine (output) | worst max abs | make s |",
            "|---|---|---|---:|---:|---:|---:|",
        ]
        for r in parity:
            low = min(r["outputs"], key=lambda o: r["outputs"][o]["cosine"])
            lines.append(
                f"| {r['models']} | {r['artifact']} | {r['precision']} | {r['feeds']} | {r['cosine']:.6f} "
                f"({low}) | {r['max_abs']:.3g} | {r['make_s']:.1f} |"
            )
        lines += ["", "max abs is in the output's own units (mask logits, IoU scores, unit-norm features)."]
        lines.append("")
    dep = s.get("deploy")
    if dep:
        lines += [
            "## Deploy: toy segmenter (zsplg-fast demo --scale ci final model), CI toy world val split",
            "",
            "| precision | mIoU fp32 PyTorch | mIoU deployed | drop (points) | val images "
            "| speed-up vs fp32 ORT |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for p in PRECISIONS:
            r = dep[p]
            lines.append(
                f"| {p} | {100 * r['reference']:.2f} | {100 * r['deployed']:.2f} | {r['drop_points']:.2f} | "
                f"{r['images']} | {r['speedup_vs_fp32_ort']:.2f}× |"
            )
        lines.append("")
    lines += [f"- {n}" for n in s.get("notes", [])]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description="fp16 / int8 precision fidelity on this CPU")
    ap.add_argument("--parts", default="toy,deploy", help="comma list of toy, deploy, real, real-partial")
    ap.add_argument("--val", type=int, default=24)
    ap.add_argument("--calib", type=int, default=8)
    ap.add_argument("--real", default="sam_encoder,sam_decoder_batched,clip_dense,clip_text,segmenter")
    ap.add_argument("--real-calib", type=int, default=4, help="int8 calibration feeds per real artifact")
    ap.add_argument("--segmenter", default=None, help="a trained toy segmenter checkpoint (deploy part)")
    ap.add_argument("--work", default="/tmp/zsplg-precision-bench")
    ap.add_argument("--out", default="bench/results/precision_fidelity")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--note", action="append", default=[], help="a line for the table's notes")
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    from zsplg_fast.bench.machine import machine_info
    from zsplg_fast.export.artifact import library_versions
    from zsplg_fast.utils.io import atomic_write_json, atomic_write_text

    torch.set_num_threads(args.threads)
    work, out = Path(args.work), Path(args.out)
    prev = json.loads(out.with_suffix(".json").read_text()) if out.with_suffix(".json").is_file() else {}
    parts = set(args.parts.split(","))
    m = machine_info()
    summary: dict[str, Any] = {
        **prev,
        "machine": f"{m['cpu']}, {m['usable_cores']} cores",
        "versions": library_versions(["onnxruntime", "onnx", "torch", "nvidia-modelopt"]),
        "threads": args.threads,
    }
    t0 = time.perf_counter()
    if "toy" in parts:
        summary["toy"] = toy_part(work, args.val, args.calib)
    if "deploy" in parts and args.segmenter:
        summary["deploy"] = deploy_part(work, Path(args.segmenter), args.threads)
    if "real" in parts:
        summary["real"] = real_part(work, args.real.split(","), args.real_calib)
    elif "real-partial" in parts:  # the rows a stopped ``real`` run finished
        summary["real"] = json.loads((work / "real_partial.json").read_text())
    if args.note:
        summary["notes"] = summary.get("notes", []) + args.note
    summary["load_avg_1m"] = round(os.getloadavg()[0], 2)
    summary["seconds"] = round(time.perf_counter() - t0, 1)
    atomic_write_json(out.with_suffix(".json"), summary)
    atomic_write_text(out.with_suffix(".md"), markdown(summary))
    print(markdown(summary))


if __name__ == "__main__":
    main()
