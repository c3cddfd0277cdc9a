"""Cold start of the edge runtime: one image, from process start to the label PNG written (process exit),
``zsplg-runtime infer`` (the torch-free venv) against ``zsplg-fast infer`` (the full package).

Each run is a new process with a new ``--out`` folder; the two commands alternate (A B A B …) so a drift of
the machine's speed hits both, and the ratio is taken pair by pair (median of the per-pair ratios).
The deploy folder is the toy segmenter (tiny backbone) trained and deployed here when ``--deploy`` is not
given, as tests/deploy/conftest.py makes it. Run it under the heavy lock:

    flock /tmp/zsplg-heavy.lock .venv/bin/python bench/cold_start.py --runs 7

Writes ``bench/results/cold_start.json`` and ``.md`` (machine description, every run, medians, ratio).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def make_deploy(work: Path, precision: str) -> Path:
    """Train the tiny segmenter briefly on synthetic shapes and deploy it (as the deploy tests do)."""
    from zsplg_fast.config import load_config
    from zsplg_fast.config.bench import DeployConfig
    from zsplg_fast.config.loader import from_dict
    from zsplg_fast.data.synthetic import generate_dataset
    from zsplg_fast.deploy import deploy
    from zsplg_fast.train.supervised import train_supervised

    ds = work / "ds"
    if not ds.exists():
        generate_dataset(ds, 48, num_classes=3, seed=3, size=96, val_fraction=0.25, labeled_fraction=1.0)
    settings = {
        "data.source": f"synthetic:{ds}",
        "data.crop_size": 64,
        "data.workers": 0,
        "data.preflight_cache": str(work / "preflight"),
        "model.backbone": "tiny",
        "supervised.batch_size": 8,
        "supervised.max_iters": 100,
        "supervised.use_enhanced": False,
        "eval.every_epochs": 0,
        "run.device": "cpu",
        "run.threads": 1,
    }
    cfg = load_config(None, {f"train.{k}": v for k, v in settings.items()}).train
    ckpt = train_supervised(cfg, work / "train")["checkpoint"]
    out = work / f"deploy-{precision}"
    base = {
        "checkpoint": str(ckpt),
        "precision": precision,
        "calib": f"synthetic:{ds}",
        "calib_split": "labeled",
        "calib_images": 12,
        "val": f"synthetic:{ds}",
        "val_split": "val",
        "exporter": "legacy",
        "latency_size": "96",
        "latency_budget_s": 0.2,
        "threads": 1,
        "max_miou_drop": 5.0,
        "out": str(out),
    }
    deploy(from_dict(DeployConfig, base))
    return out


def time_once(cmd: list[str], png: Path, env: dict[str, str]) -> float:
    """Wall seconds from process start to its exit; the label PNG must exist afterwards."""
    t0 = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    seconds = time.perf_counter() - t0
    if r.returncode != 0 or not png.is_file():
        raise SystemExit(f"{cmd[0]} failed ({r.returncode}): {r.stderr[-800:]}")
    return seconds


def machine() -> dict[str, Any]:
    import platform

    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "system": platform.system(),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--deploy", type=Path, default=None, help="a deploy folder (default: make the toy one)")
    ap.add_argument("--precision", default="int8")
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--runtime-exe", default=str(ROOT / ".venv-runtime" / "bin" / "zsplg-runtime"))
    ap.add_argument("--full-exe", default=str(ROOT / ".venv" / "bin" / "zsplg-fast"))
    ap.add_argument("--work", type=Path, default=Path("/tmp/zsplg-cold-start"))
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "cold_start")
    args = ap.parse_args()

    args.work.mkdir(parents=True, exist_ok=True)
    deploy_dir = args.deploy or make_deploy(args.work, args.precision)
    image = args.work / "one.jpg"
    if not image.exists():
        shutil.copy(sorted((args.work / "ds" / "JPEGImages").glob("val_*.jpg"))[0], image)
    full_env = dict(os.environ)  # zsplg-fast as installed (PYTHONPATH kept: a dev checkout)
    edge_env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    cmds = {
        "zsplg-runtime infer": ([args.runtime_exe], edge_env),
        "zsplg-fast infer": ([args.full_exe], full_env),
    }
    runs: dict[str, list[float]] = {k: [] for k in cmds}
    for i in range(args.runs + 1):  # run 0 of each: warm-up (page cache), not counted
        for name, (exe, env) in cmds.items():
            out = args.work / "runs" / f"{name.split()[0]}-{i}"
            shutil.rmtree(out, ignore_errors=True)
            cmd = [*exe, "infer", str(deploy_dir), "--input", str(image), "--out", str(out)]
            s = time_once(cmd, out / "labels" / f"{image.stem}.png", env)
            if i:
                runs[name].append(s)
            shutil.rmtree(out, ignore_errors=True)
    a, b = runs["zsplg-runtime infer"], runs["zsplg-fast infer"]
    ratios = [x / y for x, y in zip(a, b, strict=True)]
    result = {
        "what": "one image, process start to label PNG written (process exit), wall seconds",
        "deploy": str(deploy_dir),
        "model": "toy segmenter (tiny backbone), deployed "
        + json.loads((deploy_dir / "model.json").read_text())["precision"],
        "machine": machine(),
        "runs": args.runs,
        "seconds": {k: v for k, v in runs.items()},
        "median_s": {k: round(statistics.median(v), 3) for k, v in runs.items()},
        "ratio_runtime_over_full_median": round(statistics.median(ratios), 3),
        "target": "<= 0.333",
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    m = result["median_s"]
    md = (
        "# Cold start: one image, process start to PNG written\n\n"
        f"{result['model']}; {result['machine']['cpu']} ({result['machine']['cores']} cores, shared); "
        f"{args.runs} runs each after one warm-up, commands alternating.\n\n"
        "| command | median s | min s | max s |\n|---|---:|---:|---:|\n"
        + "".join(f"| `{k}` | {m[k]:.3f} | {min(v):.3f} | {max(v):.3f} |\n" for k, v in runs.items())
        + f"\nratio zsplg-runtime / zsplg-fast (median of per-pair ratios): "
        f"**{result['ratio_runtime_over_full_median']:.3f}** (target ≤ 0.333)\n"
    )
    args.out.with_suffix(".md").write_text(md)
    print(md)


if __name__ == "__main__":
    sys.exit(main())
