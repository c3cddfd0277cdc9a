"""What fp16 and INT8 cost and buy for a deployed segmenter on this machine, measured side by side.

Trains a segmenter briefly on a synthetic shapes dataset (the training engineer's ``train_supervised``),
deploys it at fp32, fp16 and int8 (``zsplg_fast.deploy.deploy``: mIoU of the PyTorch fp32 reference and
of the deployed ONNX on the same val images, latency of fp32 ONNX vs deployed ONNX in onnxruntime), and
writes ``<out>/summary.json``, ``<out>/summary.md`` and each folder's sidecar as ``<out>/model.<p>.json``.

    MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=100000000000 MALLOC_TOP_PAD_=1000000000 \\
    nice -n 5 .venv/bin/python bench/deploy_precision.py --out bench/results/deploy_cpu

Deploy folders (the ONNX files) go to ``deploy/bench-<precision>`` (git-ignored).
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
import warnings
from pathlib import Path
from typing import Any

import torch

# variant → (deploy precision, int8 target): int8 = TensorRT's QDQ form, int8-cpu = onnxruntime CPU's
VARIANTS = {"fp32": ("fp32", "tensorrt"), "fp16": ("fp16", "tensorrt"), "int8": ("int8", "tensorrt")}
VARIANTS["int8-cpu"] = ("int8", "cpu")


def train(
    ds: Path, run: Path, backbone: str, iters: int, threads: int, pretrained: str | None = None
) -> Path:
    """Supervised training on the labeled split; returns the final checkpoint."""
    from zsplg_fast.config import load_config
    from zsplg_fast.train.supervised import train_supervised

    settings = {
        "data.source": f"synthetic:{ds}",
        "data.crop_size": 96,
        "data.workers": 0,
        "data.preflight_cache": str(run.parent / "preflight"),
        "model.backbone": backbone,
        "model.pretrained": pretrained,
        "optim.lr": 0.02,
        "optim.lr_scaling": "none",
        "supervised.batch_size": 8,
        "supervised.max_iters": iters,
        "supervised.use_enhanced": False,
        "eval.every_epochs": 0,
        "run.device": "cpu",
        "run.threads": threads,
        "run.log_every": 100,
    }
    cfg = load_config(None, {f"train.{k}": v for k, v in settings.items()}).train
    if (run / "final.pth").is_file():
        return run / "final.pth"
    return Path(train_supervised(cfg, run)["checkpoint"])


def _row(r: dict[str, Any], folder: Path) -> dict[str, Any]:
    m, lat = r["miou"], r["latency"]
    return {
        "miou_reference": m["reference"],
        "miou_deployed": m["deployed"],
        "drop_points": m["drop_points"],
        "val_images": m["images"],
        "fp32_ort_ms": lat["fp32_ort_ms"],
        "deployed_ort_ms": lat["deployed_ort_ms"],
        "speedup_vs_fp32_ort": lat["speedup_vs_fp32_ort"],
        "input": lat["input"],
        "model_bytes": (folder / "model.onnx").stat().st_size,
        "deploy_s": r["deploy_s"],
    }


def markdown(summary: dict[str, Any]) -> str:
    """The summary table."""
    rt, tr = summary["runtime"], summary["train"]
    first = next(iter(summary["results"].values()))
    lines = [
        f"# Deployed segmenter: fp32 vs fp16 vs int8 ({summary['backbone']} DeepLabV3+, "
        f"{summary['machine']['cpu']}, {summary['machine']['usable_cores']} cores)",
        "",
        f"Trained {tr['iters']} iterations ({tr['seconds']:.0f} s, backbone weights "
        f"{tr.get('pretrained') or 'none'}) on {tr['images']} synthetic shapes images "
        "(5 classes + background), then `zsplg_fast.deploy.deploy` per precision: mIoU on the val split "
        "(UniMatch protocol, full images) of the PyTorch fp32 reference and of the deployed ONNX; latency of "
        f"one {first['input']} input in onnxruntime CPU (median), fp32 ONNX and deployed ONNX side by side. "
        f"Allocator: {rt['malloc']}; threads: torch {rt['torch_threads']}, onnxruntime "
        f"{rt['ort_intra_op_threads']}; nice {rt['nice']}; 1-min load average {summary['load_avg_1m']}.",
        "",
        "| precision | mIoU fp32 ref % | mIoU deployed % | drop (points) | fp32 ONNX ms | deployed ms "
        "| speed-up | size MB |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for p, r in summary["results"].items():
        lines.append(
            f"| {p} | {100 * r['miou_reference']:.2f} | {100 * r['miou_deployed']:.2f} | "
            f"{r['drop_points']:.2f} | {r['fp32_ort_ms']:.1f} | {r['deployed_ort_ms']:.1f} | "
            f"{r['speedup_vs_fp32_ort']:.2f}× | {r['model_bytes'] / 1e6:.2f} |"
        )
    lines += [
        "",
        "`int8`: static QDQ for TensorRT (symmetric int8 activations, the QDQ lint's form); `int8-cpu`: "
        "uint8 activations, onnxruntime CPU's fast form (TensorRT refuses it). Both: per-channel int8 "
        "weights, calibrated on 64 labeled-split images; op lists: `int8_op_types('segmenter', target)` "
        "in export/precision.py (recorded per row in model.<variant>.json).",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description="fp32 / fp16 / int8 deploy of a briefly trained segmenter")
    ap.add_argument("--out", default="bench/results/deploy_cpu")
    ap.add_argument("--work", default="/tmp/zsplg-deploy-bench")
    ap.add_argument("--backbone", default="tiny")
    ap.add_argument("--iters", type=int, default=600)
    ap.add_argument("--images", type=int, default=240)
    ap.add_argument("--latency-size", default="512")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--pretrained", default=None, help="backbone weights, e.g. toy (the toy world's)")
    ap.add_argument("--variants", default=",".join(VARIANTS))
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    import os

    from zsplg_fast.bench.machine import library_versions, machine_info, runtime_settings
    from zsplg_fast.config.bench import DeployConfig
    from zsplg_fast.config.loader import from_dict
    from zsplg_fast.data.synthetic import generate_dataset
    from zsplg_fast.deploy import deploy
    from zsplg_fast.utils.io import atomic_write_json, atomic_write_text

    if args.threads:
        torch.set_num_threads(args.threads)
    work, out_dir = Path(args.work), Path(args.out)
    ds = work / "ds"
    generate_dataset(
        ds,
        args.images,
        num_classes=5,
        seed=11,
        size=128,
        size_max=192,
        val_fraction=0.25,
        labeled_fraction=1.0,
    )
    t0 = time.perf_counter()
    run = work / f"run-{args.backbone}-{args.iters}-{args.pretrained or 'scratch'}"
    ckpt = train(ds, run, args.backbone, args.iters, torch.get_num_threads(), args.pretrained)
    train_s = time.perf_counter() - t0
    rows: dict[str, Any] = {}
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    for v in variants:
        p, target = VARIANTS[v]
        folder = Path("deploy") / f"bench-{v}"
        cfg = from_dict(
            DeployConfig,
            {
                "checkpoint": str(ckpt),
                "precision": p,
                "int8_target": target,
                "calib": f"synthetic:{ds}",
                "calib_split": "labeled",
                "calib_images": 64,
                "val": f"synthetic:{ds}",
                "val_split": "val",
                "max_miou_drop": 100.0,  # measure, do not refuse
                "latency_size": args.latency_size,
                "latency_budget_s": 10.0,
                "threads": args.threads,
                "out": str(folder),
                "force": True,
            },
        )
        t1 = time.perf_counter()
        result = deploy(cfg, progress=lambda stage, v=v: print(f"[{v}] {stage}", flush=True))
        rows[v] = _row({**result, "deploy_s": round(time.perf_counter() - t1, 1)}, folder)
    summary = {
        "benchmark": "deploy_precision",
        "backbone": args.backbone,
        "train": {
            "iters": args.iters,
            "seconds": round(train_s, 1),
            "images": args.images,
            "pretrained": args.pretrained,
        },
        "machine": machine_info(),
        "versions": library_versions(),
        "runtime": runtime_settings(args.threads),
        "load_avg_1m": round(os.getloadavg()[0], 2),
        "results": rows,
    }
    atomic_write_json(out_dir / "summary.json", summary)
    for v in variants:
        shutil.copyfile(Path("deploy") / f"bench-{v}" / "model.json", out_dir / f"model.{v}.json")
    atomic_write_text(out_dir / "summary.md", markdown(summary))
    print(markdown(summary))
    print(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
