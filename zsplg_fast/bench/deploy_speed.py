"""``zsplg-fast bench deploy``: a real-size DeepLabV3+ at fp32, fp16 and int8, side by side on this machine.

Random weights (speed does not depend on them; fidelity is measured on the trained toy segmenter by
``bench/deploy_precision.py``). Per backbone:

1. build DeepLabV3+ (``models.segmenter``: ResNet-101 as in the paper, or a MobileNet-class backbone)
   and export the ``segmenter`` spec to fp32 ONNX (validated against PyTorch);
2. make each variant from that ONNX (:data:`VARIANTS`): ``fp16`` by ModelOpt AutoCast (fp32 I/O),
   ``int8`` by static QDQ (per-channel int8 weights, calibrated on ``calib_images`` synthetic
   toy-world images preprocessed as inference does) for TensorRT (symmetric int8 activations) and
   ``int8-cpu`` for onnxruntime CPU (uint8 activations, see export/int8.py);
3. time the variants in onnxruntime CPU in fresh child processes that import neither torch nor the
   package's model code (what an edge box runs): peak RSS (``VmHWM``: model, session, inference) with
   each variant alone in a process; latency with all variants in one process, run round-robin
   (fp32, fp16, int8, …, fp32, …) for ``rounds`` processes, so a noisy neighbour on a shared machine
   hits every variant alike; report the median latency over all timed runs and throughput (images/s at
   that median, batch 1).

Results: ``<out>/bench_deploy.json`` and ``bench_deploy.md`` with the machine's description.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

# variant → (precision, int8 target, onnxruntime CPU graph level)
VARIANTS: dict[str, tuple[str, str | None, str]] = {
    "fp32": ("fp32", None, "all"),
    "fp16": ("fp16", None, "extended"),
    "int8": ("int8", "tensorrt", "all"),
    "int8-cpu": ("int8", "cpu", "all"),
}
Log = Callable[[str], None]


@dataclass
class DeployBenchConfig:
    """What ``bench deploy`` measures (CLI options map onto these fields)."""

    backbones: tuple[str, ...] = ("resnet101",)
    variants: tuple[str, ...] = tuple(VARIANTS)
    size: int = 513
    num_classes: int = 21
    calib_images: int = 8
    rounds: int = 2
    budget_s: float = 15.0
    warmup: int = 1
    max_iters: int = 50
    threads: int | None = None
    work: str = "/tmp/zsplg-bench-deploy"
    out: str = "bench/results/deploy_cpu_real"
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def calibration_images(work: Path, n: int, size: int) -> list[dict[str, np.ndarray]]:
    """``n`` synthetic toy-world images (size×size RGB) as ``{"image": (1, 3, size, size) float32}``,
    ImageNet-normalised exactly as ``infer`` prepares an image."""
    from zsplg_fast.bench.segmenter import to_input
    from zsplg_fast.data.synthetic import render_sample

    rng = np.random.default_rng(7)
    return [{"image": to_input(render_sample(rng, (size, size)).image).numpy()} for _ in range(max(1, n))]


def make_variants(backbone: str, cfg: DeployBenchConfig, log: Log) -> tuple[dict[str, Path], dict[str, Any]]:
    """Export the random-weight DeepLabV3+ and write each requested variant; returns (variant → ONNX,
    what was made: parameters, export parity, conversion and quantization records, seconds)."""
    import torch

    from zsplg_fast.export.onnx import export_onnx
    from zsplg_fast.export.precision import convert_fp16, int8_op_types, quantize_int8
    from zsplg_fast.export.specs import get_spec
    from zsplg_fast.models.segmenter import build_segmenter

    work = Path(cfg.work) / backbone
    record = work / "made.json"
    if record.is_file():  # the same work folder: reuse what an earlier run made (same seed and settings)
        made = json.loads(record.read_text())
        paths = {v: work / ("segmenter.onnx" if v == "fp32" else f"segmenter.{v}.onnx") for v in cfg.variants}
        if made.get("settings") == _settings(cfg) and all(p.is_file() for p in paths.values()):
            log(f"[{backbone}] reusing the variants in {work}")
            return paths, made
    torch.manual_seed(0)
    model = build_segmenter(backbone, cfg.num_classes).eval()
    made: dict[str, Any] = {"parameters": sum(p.numel() for p in model.parameters())}
    t0 = time.perf_counter()
    log(f"[{backbone}] export fp32 ONNX ({made['parameters'] / 1e6:.1f} M parameters)")
    art = export_onnx(get_spec("segmenter").bind(model), work, force=True, source={"weights": "random-init"})
    made["export"] = {
        "seconds": round(time.perf_counter() - t0, 1),
        "parity": [
            {k: o[k] for k in ("output", "max_abs", "cosine")} for o in art.sidecar["validation"]["outputs"]
        ],
    }
    del model
    paths = {"fp32": Path(art.path)}
    calib: list[dict[str, np.ndarray]] | None = None
    for v in cfg.variants:
        precision, target, _ = VARIANTS[v]
        if precision == "fp32":
            continue
        dst = work / f"segmenter.{v}.onnx"
        t1 = time.perf_counter()
        log(f"[{backbone}] make {v}")
        if precision == "fp16":
            rec: dict[str, Any] = convert_fp16(art.path, dst)
        else:
            if calib is None:
                calib = calibration_images(work, cfg.calib_images, cfg.size)
            rec = quantize_int8(
                art.path, dst, calib, op_types=int8_op_types("segmenter", str(target)), target=str(target)
            ).to_dict()
        made[v] = {**rec, "seconds": round(time.perf_counter() - t1, 1)}
        paths[v] = dst
    made["settings"] = _settings(cfg)
    record.write_text(json.dumps(made, default=str))
    return paths, made


def int8_recipe() -> dict[str, Any]:
    """Today's int8 recipe as recorded in ``made.json``: targets, the CPU form's integer and float
    passes, and the segmenter's CPU op list."""
    from zsplg_fast.export.int8 import INT8_TARGETS
    from zsplg_fast.export.int8_cpu import CPU_PASSES
    from zsplg_fast.export.int8_dilated import FLOAT_PASSES, MIN_DILATION
    from zsplg_fast.export.int8_ops import int8_op_types

    return {
        "targets": INT8_TARGETS,
        "cpu_passes": list(CPU_PASSES),
        "float_passes": {"passes": list(FLOAT_PASSES), "min_dilation": MIN_DILATION},
        "cpu_ops": list(int8_op_types("segmenter", "cpu")),
    }


def _settings(cfg: DeployBenchConfig) -> dict[str, Any]:
    """What the made files depend on: a work folder made with another int8 recipe is made again."""
    return {
        "size": cfg.size,
        "num_classes": cfg.num_classes,
        "calib_images": cfg.calib_images,
        "int8": int8_recipe(),
    }


def _run_child(job: dict[str, Any]) -> dict[str, Any]:
    res = subprocess.run(
        [sys.executable, "-m", "zsplg_fast.bench.deploy_speed", json.dumps(job)],
        capture_output=True,
        text=True,
        check=False,
    )
    if res.returncode != 0:
        tail = (res.stderr.strip().splitlines() or ["no output"])[-1][:300]
        return {"error": f"exit {res.returncode}: {tail}"}
    return dict(json.loads(res.stdout.strip().splitlines()[-1]))


def time_in_child(path: Path, level: str, cfg: DeployBenchConfig | dict[str, Any]) -> dict[str, Any]:
    """One ONNX in a fresh ``python -m zsplg_fast.bench.deploy_speed`` process (no torch there): session,
    warm-up and timed runs; gives the process's peak RSS (model + session + inference)."""
    job = {"mode": "one", "path": str(path), "level": level, **_job(cfg)}  # type: ignore[arg-type]
    return _run_child(job)


def time_interleaved(paths: dict[str, Path], cfg: DeployBenchConfig) -> dict[str, Any]:
    """All variants in ONE fresh process, run round-robin (fp32, fp16, int8, …, fp32, …) until each has
    ``max_iters`` runs or ``budget_s`` × variants is spent: a noisy neighbour hits every variant alike."""
    job = {
        "mode": "interleaved",
        "paths": {v: str(p) for v, p in paths.items()},
        "levels": {v: VARIANTS[v][2] for v in paths},
        **_job(cfg),
    }
    return _run_child(job)


def _job(cfg: DeployBenchConfig | dict[str, Any]) -> dict[str, Any]:
    c = asdict(cfg) if isinstance(cfg, DeployBenchConfig) else cfg
    return {k: c[k] for k in ("size", "threads", "budget_s", "warmup", "max_iters")}


def _session(path: str, level: str, threads: int | None) -> Any:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = {
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }[level]
    if threads:
        opts.intra_op_num_threads = int(threads)
    return ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])


def _child(job: dict[str, Any]) -> dict[str, Any]:
    """The child's work; torch is never imported here."""
    from zsplg_fast.bench.timing import peak_rss_mib, time_callable

    x = np.random.default_rng(0).standard_normal((1, 3, job["size"], job["size"])).astype(np.float32)
    if job.get("mode") == "interleaved":
        sessions = {v: _session(p, job["levels"][v], job["threads"]) for v, p in job["paths"].items()}
        for _ in range(job["warmup"]):
            for s in sessions.values():
                s.run(None, {"image": x})
        times: dict[str, list[float]] = {v: [] for v in sessions}
        t_end = time.perf_counter() + job["budget_s"] * len(sessions)
        while time.perf_counter() < t_end and min(map(len, times.values())) < job["max_iters"]:
            for v, s in sessions.items():
                t0 = time.perf_counter()
                s.run(None, {"image": x})
                times[v].append(1000.0 * (time.perf_counter() - t0))
        return {"times_ms": times, "torch_imported": "torch" in sys.modules}
    t0 = time.perf_counter()
    sess = _session(job["path"], job["level"], job["threads"])
    load_s = time.perf_counter() - t0
    timing = time_callable(
        lambda: sess.run(None, {"image": x}),
        warmup=job["warmup"],
        budget_s=job["budget_s"],
        max_iters=job["max_iters"],
    )
    return {
        "times_ms": timing.times_ms,
        "warmup_ms": timing.warmup_ms,
        "load_s": round(load_s, 2),
        "peak_rss_mib": round(peak_rss_mib(), 1),
        "torch_imported": "torch" in sys.modules,
    }


@dataclass
class VariantResult:
    """One variant of one backbone: all timed runs over the rounds and what they give."""

    variant: str
    times_ms: list[float] = field(default_factory=list)
    peak_rss_mib: float = 0.0
    load_s: list[float] = field(default_factory=list)
    model_mb: float = 0.0
    error: str | None = None

    def summary(self) -> dict[str, Any]:
        med = float(np.median(self.times_ms)) if self.times_ms else float("nan")
        return {
            **asdict(self),
            "median_ms": med,
            "p90_ms": float(np.percentile(self.times_ms, 90)) if self.times_ms else float("nan"),
            "throughput_img_s": 1000.0 / med if self.times_ms else float("nan"),
            "runs": len(self.times_ms),
        }


def bench_deploy(cfg: DeployBenchConfig, log: Log = print) -> dict[str, Any]:
    """Run the benchmark (see the module docstring); writes and returns the report."""
    from zsplg_fast.bench.machine import library_versions, machine_info, runtime_settings
    from zsplg_fast.utils.io import atomic_write_json, atomic_write_text

    backbones: dict[str, Any] = {}
    for backbone in cfg.backbones:
        paths, made = make_variants(backbone, cfg, log)
        results = {v: VariantResult(v, model_mb=_model_mb(paths[v])) for v in paths}
        for v, path in paths.items():  # peak RSS (and load time): each variant alone in a process
            log(f"[{backbone}] {v}: load and peak RSS in a fresh process")
            got = time_in_child(path, VARIANTS[v][2], {**asdict(cfg), "budget_s": 0.1, "max_iters": 2})
            if "error" in got:
                results[v].error = got["error"]
                continue
            results[v].load_s.append(got["load_s"])
            results[v].peak_rss_mib = got["peak_rss_mib"]
        ok = {v: p for v, p in paths.items() if results[v].error is None}
        for r in range(cfg.rounds):
            log(f"[{backbone}] round {r + 1}/{cfg.rounds}: {', '.join(ok)} round-robin in one process")
            got = time_interleaved(ok, cfg)
            if "error" in got:
                for v in ok:
                    results[v].error = got["error"]
                break
            for v, times in got["times_ms"].items():
                results[v].times_ms += times
        rows = {v: res.summary() for v, res in results.items()}
        base = rows["fp32"]["median_ms"]
        for row in rows.values():
            row["speedup_vs_fp32"] = base / row["median_ms"] if row["runs"] else None
        backbones[backbone] = {"made": made, "results": rows}
    report = {
        "benchmark": "bench_deploy",
        "config": asdict(cfg),
        "machine": machine_info(),
        "versions": library_versions(),
        "runtime": runtime_settings(cfg.threads),
        "load_avg_1m_end": round(os.getloadavg()[0], 2),
        "backbones": backbones,
    }
    out = Path(cfg.out)
    atomic_write_json(out / "bench_deploy.json", report)
    atomic_write_text(out / "bench_deploy.md", markdown(report))
    return report


def _model_mb(path: Path) -> float:
    files = [path, path.with_name(path.name + ".data")]
    return round(sum(f.stat().st_size for f in files if f.is_file()) / 1e6, 1)


def markdown(report: dict[str, Any]) -> str:
    """The side-by-side table per backbone."""
    cfg, m, rt = report["config"], report["machine"], report["runtime"]
    lines = [
        f"# Real-size DeepLabV3+ at {cfg['size']}×{cfg['size']}: fp32 vs fp16 vs int8, onnxruntime CPU",
        "",
        f"Machine: {m['cpu']}, {m['usable_cores']} usable cores, {m['memory_gib']} GiB; SIMD flags: "
        f"{', '.join(m['cpu_flags']) or 'none of AVX2/AVX-512'}"
        f"{'' if 'avx512_vnni' in m['cpu_flags'] else ' (no AVX-512 VNNI: int8 runs on AVX2 kernels)'}. "
        f"onnxruntime {report['versions'].get('onnxruntime')}, threads {rt['ort_intra_op_threads']}, "
        f"allocator {rt['malloc']}; 1-min load average at the end {report['load_avg_1m_end']} "
        "(the machine is shared: ratios within this run are what to read).",
        "",
        f"Random weights, batch 1, processes without torch. Latency: {cfg['rounds']} processes that each "
        f"hold every variant and run them round-robin (≤ {cfg['budget_s']} s per variant), median of all "
        "timed runs; throughput = images/s at that median; peak RSS = high-water mark of a process holding "
        "that variant alone (model + session + inference). int8: static QDQ, per-channel int8 weights, "
        f"{cfg['calib_images']} calibration "
        "images; `int8` is the TensorRT form (symmetric int8 activations), `int8-cpu` the onnxruntime "
        "CPU form (uint8 activations, then export/int8_cpu.py's integer passes).",
    ]
    for name, b in report["backbones"].items():
        made = b["made"]
        lines += [
            "",
            f"## {name} ({made['parameters'] / 1e6:.1f} M parameters)",
            "",
            "| variant | latency ms (median) | p90 ms | throughput img/s | speed-up vs fp32 | peak RSS MiB "
            "| model MB | runs |",
            "|---|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for v, r in b["results"].items():
            if not r["runs"]:
                lines.append(f"| {v} | not run: {r['error']} | | | | | | 0 |")
                continue
            lines.append(
                f"| {v} | {r['median_ms']:.0f} | {r['p90_ms']:.0f} | {r['throughput_img_s']:.2f} | "
                f"{r['speedup_vs_fp32']:.2f}× | {r['peak_rss_mib']:.0f} | {r['model_mb']:.1f} | {r['runs']} |"
            )
    if cfg.get("note"):
        lines += ["", cfg["note"]]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> None:
    """Child entry point: one JSON job in argv, one JSON line out."""
    args = list(sys.argv[1:] if argv is None else argv)
    print(json.dumps(_child(json.loads(args[0]))))


if __name__ == "__main__":
    main()
