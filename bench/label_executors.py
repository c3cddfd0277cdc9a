"""The label job's three executors on the same images: local (one process), ``--devices cpu:2`` (two
worker processes), and Ray Data (CPU prepare tasks → 2 labeling actors → CPU write tasks).

Each executor labels the same toy-world images into a fresh folder with the shipped toy SAM and CLIP
(``zsplg_fast/configs/toy_ci.yaml``); the seconds are end to end as a user sees them (workers and actors
load their models inside the timing; ``ray.init`` is timed apart). The local job runs twice: with
torch's default threads (all cores) and with one thread, to tell the workers' gain from the cost of
OpenMP threads on a shared CPU. Every executor's labels are compared
with the local ones pixel for pixel. Results: ``bench/results/label_executors.{json,md}``.

    nice -n 10 .venv/bin/python bench/label_executors.py --images 16

On a GPU machine ``--devices all`` and ``--num-gpus-per-worker 1`` measure the same on GPUs.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from zsplg_fast.config import load_config
from zsplg_fast.data import read_label
from zsplg_fast.data.synthetic import make_toy_world
from zsplg_fast.labeling.run import label_dataset
from zsplg_fast.utils.io import atomic_write_json, atomic_write_text

TOY_CI = Path(__file__).parents[1] / "zsplg_fast" / "configs" / "toy_ci.yaml"


def _labels(out: Path) -> dict[str, np.ndarray]:
    return {p.stem: read_label(p) for p in sorted((out / "labels").glob("*.png"))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=16)
    ap.add_argument("--devices", default="cpu:2")
    ap.add_argument("--ray-workers", type=int, default=2)
    ap.add_argument("--ray-batch", type=int, default=4)
    ap.add_argument("--num-gpus-per-worker", type=float, default=0.0)
    ap.add_argument("--work", default=None, help="scratch folder (default: a temporary one)")
    ap.add_argument("--results", default=str(Path(__file__).parent / "results" / "label_executors"))
    args = ap.parse_args()

    work = Path(args.work or tempfile.mkdtemp(prefix="zsplg-exec-bench-"))
    data = work / "world"
    make_toy_world(data, "ci")
    split = work / "split.txt"
    lines = (data / "splits" / "unlabeled.txt").read_text().splitlines(True)[: args.images]
    split.write_text("".join(lines))
    base = {"data.source": f"synthetic:{data}", "data.split": str(split), "classify.classes": "auto"}
    runs = {
        "local": {},
        "local, 1 torch thread": {"threads": 1},
        f"devices {args.devices}": {"label.devices": args.devices},
        f"ray {args.ray_workers} actors, batch {args.ray_batch}": {
            "label.executor": "ray",
            "label.workers": args.ray_workers,
            "label.ray_batch": args.ray_batch,
            "label.num_gpus_per_worker": args.num_gpus_per_worker,
        },
    }
    rows = []
    ref: dict[str, np.ndarray] | None = None
    for name, extra in runs.items():
        out = work / name.split()[0].strip(",")
        if "threads" in extra:
            out = out.with_name(f"{out.name}-{extra['threads']}t")
        threads = torch.get_num_threads()
        torch.set_num_threads(int(extra.pop("threads", threads)))
        cfg = load_config(TOY_CI, {**base, "label.out": str(out), **extra})
        init_s = 0.0
        if extra.get("label.executor") == "ray":
            import ray

            t0 = time.perf_counter()
            ray.init(num_cpus=os.cpu_count() + args.ray_workers, include_dashboard=False, log_to_driver=False)
            init_s = time.perf_counter() - t0
        load0 = os.getloadavg()[0]
        t0 = time.perf_counter()
        summary = label_dataset(cfg)
        seconds = time.perf_counter() - t0
        torch.set_num_threads(threads)
        shard_s = [json.loads(p.read_text())["seconds"] for p in (out / "shards").glob("[0-9]*-of-*.json")]
        labels = _labels(out)
        ref = ref if ref is not None else labels
        same = sum(k in ref and np.array_equal(v, ref[k]) for k, v in labels.items())
        rows.append(
            {
                "executor": name,
                "images": summary.labeled,
                "failed": summary.failed,
                "seconds": round(seconds, 2),
                "slowest_shard_job_s": round(max(shard_s), 2),
                "images_per_s": round(summary.labeled / seconds, 3),
                "ray_init_s": round(init_s, 2),
                "identical_to_local": f"{same}/{len(ref)}",
                "load_avg_1m_at_start": round(load0, 2),
            }
        )
        print(rows[-1], flush=True)
    local_s = rows[0]["seconds"]
    for r in rows:
        r["speed_vs_local"] = round(local_s / r["seconds"], 2)
    meta = {
        "machine": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "images": args.images,
    }
    res = Path(args.results)
    res.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(res.with_suffix(".json"), {"meta": meta, "rows": rows})
    head = "| executor | images | seconds | slowest shard's job s | images/s | × local | ray.init s "
    head += "| identical to local | load 1m |\n|---|---|---|---|---|---|---|---|---|\n"
    body = "".join(
        f"| {r['executor']} | {r['images']} | {r['seconds']} | {r['slowest_shard_job_s']} "
        f"| {r['images_per_s']} | {r['speed_vs_local']} | {r['ray_init_s']} | {r['identical_to_local']} "
        f"| {r['load_avg_1m_at_start']} |\n"
        for r in rows
    )
    note = (
        f"\nToy SAM + toy CLIP (toy_ci.yaml), {args.images} toy-world images, {os.cpu_count()} CPUs. "
        "Seconds are end to end (model loading in workers/actors included; ray.init apart); a shard's "
        "job seconds are its LabelJob's (after its models are built; for Ray, the driver's whole "
        "pipeline, actor start-up included).\n"
    )
    atomic_write_text(res.with_suffix(".md"), head + body + note)
    print(head + body + note)


if __name__ == "__main__":
    main()
