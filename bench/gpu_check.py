"""The one GPU check (called by ``bench/gpu_check.sh``; see its header for how to run it).

Sections (``bench/gpu_sections.py``), each in its own subprocess with a hard time cap; the whole run
stays under 6 minutes and the report is rewritten after every section, so a run cut short still says
what it did:

- ``env``: torch/CUDA/GPU facts, which pure-Python dependencies were stubbed;
- ``clip``: GEM dense CLIP ViT-B-16 features at 448, fp32 vs bf16 autocast (time, cosine);
- ``amg:vit_b`` / ``amg:vit_h``: 32×32 AMG on a 1024×768 image: upstream ``SamAutomaticMaskGenerator``
  (fp32) vs ours (``MaskGenerator`` on spec-module TorchEngines) fp32 and bf16; fidelity to upstream
  and of bf16 to fp32 (final masks, per-prompt decoder masks, embedding cosine);
- ``compile:vit_b`` / ``compile:vit_h``: ours with bf16 + ``torch.compile`` (compile time, steady time);
- ``engines``: the batched decoder exported to ONNX and run on every GPU runtime that imports
  (onnxruntime CUDA / TensorRT providers, TensorRT plans), parity against torch on the GPU.

Output: ``$OUT/gpu_check.json`` and ``$OUT/gpu_check.md`` (one table to paste), also printed.
``--smoke`` runs every code path on the CPU with the tiny SAM, a small CLIP and a 4×4 grid (compile
with the ``eager`` backend), so a test can execute it in seconds. Weights are random throughout:
timings are meaningful, masks are not (random SAMs give few masks after NMS).
"""

from __future__ import annotations

import argparse
import importlib.machinery
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
import types
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
TOTAL_BUDGET_S = 330.0
# section → time cap in seconds; run in this order, each also capped by what is left of the budget.
SECTIONS: dict[str, float] = {
    "env": 20,
    "clip": 40,
    "amg:vit_b": 75,
    "compile:vit_b": 75,
    "engines": 45,
    "amg:vit_h": 90,
    "compile:vit_h": 100,  # inductor compiles vit_h's 32 blocks: vit_b's first call alone took 34 s
}
OPTIONAL_PURE_PYTHON = ("yaml", "tqdm", "ftfy", "regex", "huggingface_hub", "safetensors", "timm")


class _Inert:
    """Accepts any call or attribute and returns itself: stands in for unused tokenizer/hub helpers."""

    def __init__(self, *a: Any, **k: Any) -> None:
        pass

    def __call__(self, *a: Any, **k: Any) -> _Inert:
        return self

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        return self


def _module_getattr(attr: str) -> Any:
    if attr.startswith("__"):
        raise AttributeError(attr)
    return _Inert


def stub_missing(names: tuple[str, ...] = OPTIONAL_PURE_PYTHON) -> list[str]:
    """Insert inert modules for missing pure-Python deps that open_clip / our config import at module
    level but the image towers never use (tokenizer, hub download, YAML configs). Returns their names."""
    stubbed = []
    for name in names:
        if sys.modules.get(name) is not None or (name not in sys.modules and importlib.util.find_spec(name)):
            continue
        mod = types.ModuleType(name, "stub: not installed, unused by the GPU check")
        mod.__getattr__ = _module_getattr  # type: ignore[method-assign]
        mod.__path__ = []
        mod.__spec__ = importlib.machinery.ModuleSpec(name, None, is_package=True)
        sys.modules[name] = mod
        stubbed.append(name)
    return stubbed


def run_section(name: str, smoke: bool) -> dict:
    import gpu_sections  # beside this file; imported in the worker only (it imports torch at call time)
    import torch

    dev = torch.device("cpu" if smoke or not torch.cuda.is_available() else "cuda")
    if not smoke and dev.type != "cuda":
        raise RuntimeError("no CUDA device visible to torch (use --smoke for the CPU code-path check)")
    torch.manual_seed(0)
    kind, _, variant = name.partition(":")
    fn = getattr(gpu_sections, f"section_{kind}")
    return fn(smoke, dev, variant) if variant else fn(smoke, dev)


def _s(times: Any) -> str:
    return f"{min(times):.3f}" if isinstance(times, list) and times else "–"


def _amg_rows(name: str, r: dict) -> list[tuple[str, str, str, str]]:
    v, g = r.get("variant", "?"), r.get("grid", "?")
    up = r.get("upstream_fp32_s")
    rows = [(f"AMG {v} {g}×{g}, upstream fp32", _s(up), "1.00×" if up else "–", "reference" if up else "")]
    for mode, m in r.get("ours", {}).items():
        fid = f"{m.get('masks')} masks"
        if "mean_best_iou_vs_upstream" in m:
            fid += f"; IoU vs upstream {m['mean_best_iou_vs_upstream']}"
        if "mean_best_iou_vs_ours_fp32" in m:
            fid += f"; IoU vs fp32 {m['mean_best_iou_vs_ours_fp32']}"
        ratio = f"{m['speedup_vs_upstream']}×" if "speedup_vs_upstream" in m else "–"
        rows.append((f"AMG {v} ours {mode}", _s(m.get("s")), ratio, fid))
    if "bf16_vs_fp32_engines" in r:
        e = r["bf16_vs_fp32_engines"]
        note = f"embedding cos {e['embedding_cosine']}, per-prompt mask IoU mean {e['prompt_mask_iou_mean']}"
        rows.append((f"AMG {v} bf16 vs fp32 engines", "–", "–", note))
    if "colour_sam_vs_upstream" in r:
        c = r["colour_sam_vs_upstream"]
        note = f"mean best IoU {c['mean_best_iou']}, masks {c['masks_ours']} vs {c['masks_upstream']}"
        rows.append((f"colour SAM {g}×{g}: ours vs upstream", "–", "–", note))
    return rows


def table_rows(report: dict) -> list[tuple[str, str, str, str]]:
    """(check, seconds, ratio, fidelity / note) rows for the paste table."""
    rows: list[tuple[str, str, str, str]] = []
    for name, r in report["sections"].items():
        kind = name.partition(":")[0]
        if r.get("status") != "ok":
            cap = f" at the {r['cap_s']} s cap" if "cap_s" in r else ""
            why = r.get("error") or r.get("reason") or ("partial results below" if r.get("partial") else "")
            rows.append((name, "–", "–", f"{r.get('status')}{cap}: {why}"[:160]))
            if not (r.get("partial") and kind == "amg"):
                continue
        if kind == "env":
            rows.append(("env", "–", "–", f"{r.get('gpu', r.get('device'))}, torch {r.get('torch')}"))
        elif kind == "clip":
            for b in ("batch1", "batch8", "batch2"):
                if b in r:
                    c = r[b]
                    rows.append(
                        (
                            f"CLIP {r['model']} GEM {r['size']}px {b} fp32 → bf16",
                            f"{_s(c['fp32_s'])} → {_s(c['bf16_s'])}",
                            f"{c['bf16_images_per_s'] / max(c['fp32_images_per_s'], 1e-9):.2f}×",
                            f"cosine mean {c['bf16_vs_fp32_cosine_mean']} min {c['bf16_vs_fp32_cosine_min']}",
                        )
                    )
        elif kind == "amg":
            rows += _amg_rows(name, r)
        elif kind == "compile":
            rows.append(
                (
                    f"AMG {r['variant']} ours bf16 + torch.compile",
                    _s(r["bf16_compile_s"]),
                    f"{r['speedup_vs_bf16_eager']}× vs bf16 eager",
                    f"first call {r['bf16_compile_first_call_s']} s; "
                    f"IoU vs eager {r['mean_best_iou_vs_bf16_eager']}",
                )
            )
        elif kind == "engines":
            for art, rec in r.get("artifacts", {}).items():
                for rt in r.get("runtimes", []):
                    res = rec.get(rt, {})
                    worst = [v for v in res.values() if isinstance(v, dict)]
                    note = (
                        ", ".join(
                            f"{k} max abs {v['max_abs']} cos {v['cosine']}"
                            for k, v in res.items()
                            if isinstance(v, dict)
                        )
                        if worst
                        else res.get("error", "")
                    )
                    rows.append((f"{art} on {rt}", "–", "–", note[:200]))
            for lib, why in r.get("not_run", {}).items():
                rows.append((f"engines: {lib}", "–", "–", f"not run: {why}"))
    return rows


def render_table(report: dict) -> str:
    head = "| check | seconds | ratio | fidelity / note |\n|---|---|---|---|\n"
    body = "".join(f"| {a} | {b} | {c} | {d} |\n" for a, b, c, d in table_rows(report))
    return head + body + f"\nsmoke={report['smoke']}, total {report.get('total_s', '?')} s\n"


def _write(report: dict, out: Path) -> None:
    """Rewrite the JSON and the table atomically (after every section: a run cut short still reports)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    for path, text in ((out, json.dumps(report, indent=2)), (out.with_suffix(".md"), render_table(report))):
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(text)
        os.replace(tmp, path)


def _write_partial_on_term(fragment: Path, t0: float, stubbed: list[str]) -> None:
    """Worker side: on SIGTERM (the driver's time cap) write what the section measured so far."""
    import signal

    def handler(signum: int, frame: Any) -> None:
        import gpu_sections

        partial = {"status": "timeout", "partial": True, **gpu_sections.PARTIAL}
        partial |= {"wall_s": round(time.perf_counter() - t0, 2), "stubbed_modules": stubbed}
        fragment.write_text(json.dumps(partial, indent=2, default=str))
        os._exit(124)

    signal.signal(signal.SIGTERM, handler)


def _run_worker(cmd: list[str], frag: Path, limit: float) -> dict:
    """Run one section's worker under ``limit`` seconds: its result, its partial result on a timeout
    (SIGTERM first, so it can write one), or why it crashed."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        _, err = proc.communicate(timeout=limit)
    except subprocess.TimeoutExpired:
        proc.terminate()
        try:
            _, err = proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, err = proc.communicate()
        result = json.loads(frag.read_text()) if frag.is_file() else {"status": "timeout"}
        return {**result, "status": "timeout", "cap_s": round(limit, 1)}
    if frag.is_file():
        return json.loads(frag.read_text())
    return {"status": "crashed", "rc": proc.returncode, "error": (err or "")[-2000:]}


def main() -> None:
    ap = argparse.ArgumentParser(description="GPU check: AMG upstream vs ours, CLIP dense, bf16, engines")
    ap.add_argument("--smoke", action="store_true", help="CPU, tiny models: exercise every code path fast")
    ap.add_argument("--section", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--fragment", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--budget", type=float, default=TOTAL_BUDGET_S, help="seconds for all sections")
    ap.add_argument("--only", default=None, help="comma-separated section names (default: all)")
    ap.add_argument(
        "--out", default=None, help="result file (default $OUT/gpu_check.json or ./gpu_check.json)"
    )
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    stubbed = stub_missing()
    if args.section:  # worker: one section, result to a JSON fragment
        import warnings

        warnings.simplefilter("ignore")
        t0 = time.perf_counter()
        _write_partial_on_term(Path(args.fragment), t0, stubbed)
        try:
            result = {"status": "ok", **run_section(args.section, args.smoke)}
        except Exception as e:  # reported in the JSON, the other sections still run
            result = {"status": "error", "error": f"{type(e).__name__}: {e}"[:2000]}
        result |= {"wall_s": round(time.perf_counter() - t0, 2), "stubbed_modules": stubbed}
        Path(args.fragment).write_text(json.dumps(result, indent=2))
        return
    out = Path(args.out) if args.out else Path(os.environ.get("OUT") or ".") / "gpu_check.json"
    report: dict[str, Any] = {"smoke": args.smoke, "budget_s": args.budget, "sections": {}}
    wanted = set(args.only.split(",")) if args.only else set(SECTIONS)
    unknown = wanted - set(SECTIONS)
    if unknown:
        ap.error(f"unknown section(s) {sorted(unknown)}; valid: {', '.join(SECTIONS)}")
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for name, cap in SECTIONS.items():
            if name not in wanted or (args.smoke and name.endswith("vit_h")):  # vit_h: vit_b's code path
                continue
            left = args.budget - (time.perf_counter() - start)
            if left < 10:
                report["sections"][name] = {"status": "skipped", "reason": "time budget spent"}
                _write(report, out)
                continue
            frag = Path(tmp) / f"{name.replace(':', '_')}.json"
            cmd = [sys.executable, __file__, "--section", name, "--fragment", str(frag)]
            cmd += ["--smoke"] if args.smoke else []
            limit = min(cap * (3 if args.smoke else 1), left)
            print(f"[gpu_check] {name} (cap {limit:.0f} s)", flush=True)
            report["sections"][name] = _run_worker(cmd, frag, limit)
            report["total_s"] = round(time.perf_counter() - start, 1)
            _write(report, out)
            print(f"[gpu_check] {name}: {report['sections'][name].get('status')}", flush=True)
    report["total_s"] = round(time.perf_counter() - start, 1)
    _write(report, out)
    print(render_table(report), flush=True)
    print(f"[gpu_check] wrote {out} and {out.with_suffix('.md')} in {report['total_s']} s", flush=True)


if __name__ == "__main__":
    main()
