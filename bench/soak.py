"""Soak: one label job over many small toy images, RSS and throughput sampled every N images.

A long labeling job must not grow in memory or slow down as it goes (a leak in the labeler, the
writer, the manifest or the prefetch thread shows here first). The job is ``zsplg-fast label`` as a
user runs it (``label_dataset``, local executor, resumable writes, one prefetch thread) with the
shipped toy SAM and toy CLIP (``zsplg_fast/configs/toy_ci.yaml``) on synthetic images, small enough
that 2,000 of them take about 10 minutes on one CPU core:

- images: ``generate_dataset`` shapes, ``--size`` px (default 64), all in one split;
- SAM: the toy SAM (256 px input), ``--points`` × ``--points`` prompt grid (default 4 × 4), fast AMG;
- CLIP: the toy CLIP at ``--clip-size`` px (default 64); torch at 1 thread.

Every ``--every`` images (from the job's progress callback) it records VmRSS, VmHWM, open file
descriptors, threads and the images/s of the last window. After ``--warmup`` images the verdict is:
RSS growth (last sample vs the first after warm-up) ≤ 5 %, and throughput flat (mean images/s of the
last 5 windows vs the first 5 after warm-up, within ±15 % on a quiet machine).

    MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=100000000000 MALLOC_TOP_PAD_=1000000000 \\
        flock /tmp/zsplg-heavy.lock .venv/bin/python bench/soak.py --images 2000

Results: ``bench/results/soak_cpu.{json,md,png}``.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from zsplg_fast.config import load_config
from zsplg_fast.data.synthetic import generate_dataset
from zsplg_fast.labeling.run import label_dataset
from zsplg_fast.utils.io import atomic_write_json, atomic_write_text, atomic_write_with

TOY_CI = Path(__file__).parents[1] / "zsplg_fast" / "configs" / "toy_ci.yaml"
MALLOC_ENV = ("MALLOC_MMAP_MAX_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_")


def _proc_status() -> dict[str, int]:
    """VmRSS and VmHWM in MiB, threads, from /proc/self/status (Linux)."""
    out: dict[str, int] = {}
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(value.split()[0]) // 1024
            elif key == "Threads":
                out[key] = int(value)
    return out


def _verdict(rows: list[dict[str, Any]], warmup: int) -> dict[str, Any]:
    after = [r for r in rows if r["images"] > warmup]
    if len(after) < 2:
        return {"note": "too few samples after warm-up"}
    rss0, rss1 = after[0]["rss_mib"], after[-1]["rss_mib"]
    k = min(5, len(after) // 2)
    first = sum(r["window_images_per_s"] for r in after[:k]) / k
    last = sum(r["window_images_per_s"] for r in after[-k:]) / k
    cpu_first = sum(r["cpu_ms_per_image"] for r in after[:k]) / k
    cpu_last = sum(r["cpu_ms_per_image"] for r in after[-k:]) / k
    growth = 100.0 * (rss1 - rss0) / rss0
    xs = [r["images"] for r in after]
    ys = [r["cpu_ms_per_image"] for r in after]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sum((x - mx) ** 2 for x in xs)
    return {
        "warmup_images": warmup,
        "rss_after_warmup_mib": rss0,
        "rss_last_mib": rss1,
        "rss_growth_percent": round(growth, 2),
        "rss_ok": growth <= 5.0,
        "throughput_first_windows": round(first, 3),
        "throughput_last_windows": round(last, 3),
        "throughput_ratio_last_vs_first": round(last / first, 3),
        "cpu_ms_per_image_first_windows": round(cpu_first, 2),
        "cpu_ms_per_image_last_windows": round(cpu_last, 2),
        "cpu_ms_per_image_trend_percent_per_1000_images": round(100 * slope * 1000 / my, 2),
        "fds_first": after[0]["open_fds"],
        "fds_last": after[-1]["open_fds"],
        "threads_first": after[0]["threads"],
        "threads_last": after[-1]["threads"],
    }


def _markdown(meta: dict[str, Any], rows: list[dict[str, Any]], verdict: dict[str, Any]) -> str:
    head = "| images | s | window img/s | CPU ms/img | RSS MiB | peak MiB | open fds | threads | load 1m |\n"
    head += "|---|---|---|---|---|---|---|---|---|\n"
    body = "".join(
        f"| {r['images']} | {r['seconds']} | {r['window_images_per_s']} | {r['cpu_ms_per_image']} | "
        f"{r['rss_mib']} | "
        f"{r['hwm_mib']} | {r['open_fds']} | {r['threads']} | {r['load_1m']} |\n"
        for r in rows
    )
    v = verdict
    lines = [
        f"# Soak: {meta['images']} toy images in one label job\n",
        f"{meta['setup']}. Machine: {meta['machine']}, {meta['cpus']} CPUs (shared), torch threads "
        f"{meta['torch_threads']}, malloc env {meta['malloc_env']}. {meta['date']}.\n",
        head + body,
        f"After a warm-up of {v.get('warmup_images')} images: RSS {v.get('rss_after_warmup_mib')} → "
        f"{v.get('rss_last_mib')} MiB ({v.get('rss_growth_percent')} %, limit 5 %: "
        f"{'ok' if v.get('rss_ok') else 'OVER'}); throughput of the first 5 windows "
        f"{v.get('throughput_first_windows')} img/s, of the last 5 {v.get('throughput_last_windows')} "
        f"img/s (ratio {v.get('throughput_ratio_last_vs_first')}); process CPU per image "
        f"{v.get('cpu_ms_per_image_first_windows')} → {v.get('cpu_ms_per_image_last_windows')} ms "
        f"(least-squares trend {v.get('cpu_ms_per_image_trend_percent_per_1000_images')} % per 1000 "
        f"images; CPU time is what the shared machine's load disturbs least); open fds "
        f"{v.get('fds_first')} → "
        f"{v.get('fds_last')}, threads {v.get('threads_first')} → {v.get('threads_last')}. Job total "
        f"{meta['job_seconds']} s ({meta['labeled']} labeled, {meta['failed']} failed).\n",
    ]
    return "\n".join(lines)


def _plot(path: Path, rows: list[dict[str, Any]], warmup: int, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = [r["images"] for r in rows]
    fig, (ax, ax2) = plt.subplots(2, 1, figsize=(8, 6.5), sharex=True)
    ax.plot(n, [r["rss_mib"] for r in rows], "o-", color="tab:blue")
    ax.set_ylabel("RSS (MiB)")
    ax.set_ylim(0, max(r["rss_mib"] for r in rows) * 1.15)
    ax.set_title(title)
    ax2.plot(n, [r["window_images_per_s"] for r in rows], "s-", color="tab:orange", label="images/s (wall)")
    ax2.set_ylabel("images/s (last window)")
    ax2.set_ylim(0, max(r["window_images_per_s"] for r in rows) * 1.3)
    ax2.set_xlabel("images labeled")
    ax3 = ax2.twinx()
    ax3.plot(n, [r["cpu_ms_per_image"] for r in rows], "^--", color="tab:green", label="CPU ms / image")
    ax3.set_ylabel("process CPU ms per image")
    ax3.set_ylim(0, max(r["cpu_ms_per_image"] for r in rows) * 1.3)
    for a in (ax, ax2):
        a.axvline(warmup, color="grey", linestyle=":")
    handles = ax2.get_legend_handles_labels()[0] + ax3.get_legend_handles_labels()[0]
    ax2.legend(handles, [h.get_label() for h in handles], loc="lower right")
    fig.tight_layout()
    atomic_write_with(path, lambda f: fig.savefig(f, format="png", dpi=110))
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=2000)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--points", type=int, default=4)
    ap.add_argument("--clip-size", type=int, default=64)
    ap.add_argument("--every", type=int, default=100)
    ap.add_argument("--warmup", type=int, default=200)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--work", default=None, help="scratch folder (default: a temporary one)")
    ap.add_argument("--results", default=str(Path(__file__).parent / "results" / "soak_cpu"))
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    work = Path(args.work or tempfile.mkdtemp(prefix="zsplg-soak-"))
    t0 = time.perf_counter()
    generate_dataset(work / "ds", args.images, num_classes=3, seed=0, size=args.size, val_fraction=0.0)
    gen_s = time.perf_counter() - t0
    split = work / "all.txt"
    lines = [
        ln for name in ("labeled", "unlabeled") for ln in (work / "ds" / "splits" / f"{name}.txt").open()
    ]
    split.write_text("".join(lines[: args.images]))
    cfg = load_config(
        TOY_CI,
        {
            "data.source": f"synthetic:{work / 'ds'}",
            "data.split": str(split),
            "label.out": str(work / "out"),
            "amg.points_per_side": args.points,
            "clip.image_size": args.clip_size,
        },
    )
    rows: list[dict[str, Any]] = []
    start = time.perf_counter()
    last = [start, 0, time.process_time()]

    def progress(done: int, total: int, sample_id: str) -> None:
        if done % args.every and done != total:
            return
        now, cpu = time.perf_counter(), time.process_time()
        st = _proc_status()
        rows.append(
            {
                "images": done,
                "seconds": round(now - start, 1),
                "window_images_per_s": round((done - last[1]) / (now - last[0]), 3),
                "cpu_ms_per_image": round(1000 * (cpu - last[2]) / max(done - last[1], 1), 2),
                "rss_mib": st["VmRSS"],
                "hwm_mib": st["VmHWM"],
                "open_fds": len(os.listdir("/proc/self/fd")),
                "threads": st["Threads"],
                "load_1m": round(os.getloadavg()[0], 2),
            }
        )
        last[:] = [now, done, cpu]
        print(rows[-1], flush=True)

    summary = label_dataset(cfg, on_progress=progress)
    job_s = time.perf_counter() - start
    verdict = _verdict(rows, args.warmup)
    setup = (
        f"toy SAM (256 px input) + toy CLIP at {args.clip_size} px, {args.points}×{args.points} prompt "
        f"grid, fast AMG on torch, {args.size} px synthetic images, local executor with one prefetch "
        f"thread; samples every {args.every} images (job progress callback)"
    )
    meta = {
        "images": args.images,
        "setup": setup,
        "machine": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "torch_threads": args.threads,
        "malloc_env": {k: os.environ.get(k) for k in MALLOC_ENV},
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "generate_s": round(gen_s, 1),
        "job_seconds": round(job_s, 1),
        "labeled": summary.labeled,
        "failed": summary.failed,
        "torch": torch.__version__,
    }
    res = Path(args.results)
    res.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(res.with_suffix(".json"), {"meta": meta, "verdict": verdict, "rows": rows})
    atomic_write_text(res.with_suffix(".md"), _markdown(meta, rows, verdict))
    _plot(res.with_suffix(".png"), rows, args.warmup, f"soak: {args.images} toy images, one label job")
    print(verdict)


if __name__ == "__main__":
    main()
