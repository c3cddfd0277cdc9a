"""The one GPU check (called by ``bench/gpu_check.sh``; see its header for how to run it).

Sections, each in its own subprocess with a hard time cap (the whole run stays under 6 minutes):

- ``env``: torch/CUDA/GPU facts, which pure-Python dependencies were stubbed;
- ``clip``: GEM dense CLIP ViT-B-16 features at 448, fp32 vs bf16 autocast (time, cosine);
- ``amg:vit_b`` / ``amg:vit_h``: 32×32 AMG on a 1024×768 image: upstream ``SamAutomaticMaskGenerator``
  (fp32) vs ours (``MaskGenerator`` on spec-module TorchEngines) fp32 and bf16; fidelity to upstream
  and of bf16 to fp32 (final masks, per-prompt decoder masks, embedding cosine);
- ``compile:vit_b`` / ``compile:vit_h``: ours with bf16 + ``torch.compile`` (compile time, steady time).

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
    "amg:vit_b": 50,
    "amg:vit_h": 70,
    "compile:vit_b": 75,
    "compile:vit_h": 75,
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


# ---- helpers used inside sections ---------------------------------------------------------------------


def _sync(dev: Any) -> None:
    import torch

    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def _times(fn: Any, runs: int, dev: Any) -> list[float]:
    out = []
    for _ in range(runs):
        _sync(dev)
        t0 = time.perf_counter()
        fn()
        _sync(dev)
        out.append(round(time.perf_counter() - t0, 4))
    return out


def _peak_mib(dev: Any) -> float | None:
    import torch

    return round(torch.cuda.max_memory_allocated(dev) / 2**20, 1) if dev.type == "cuda" else None


def _build_sam(variant: str, dev: Any) -> Any:
    """Random-init SAM created directly on ``dev`` (vit_h initialises in seconds on a GPU)."""
    import torch

    from zsplg_fast.models.sam import SAM_BUILDERS

    torch.manual_seed(0)
    with torch.device(dev):
        return SAM_BUILDERS[variant]().eval()


def _sam_engines(sam: Any, dev: Any, autocast: str, compile_backend: str | None = None) -> tuple[Any, Any]:
    import torch

    from zsplg_fast.engines.torch_engine import TorchEngine
    from zsplg_fast.export.specs import get_spec

    out = []
    for name in ("sam_encoder", "sam_decoder_batched"):
        p = get_spec(name).bind(sam, **({"validation_batches": (1,)} if name == "sam_encoder" else {}))
        module = (
            torch.compile(p.module, backend=compile_backend, dynamic=False) if compile_backend else p.module
        )
        out.append(TorchEngine(module, p.inputs, p.outputs, device=str(dev), autocast=autocast, name=name))
    return out[0], out[1]


def _decoder_fidelity(sam: Any, dev: Any, image: Any, enc_a: Any, dec_a: Any, enc_b: Any, dec_b: Any) -> dict:
    """bf16 vs fp32 at the engine level: embedding cosine, per-prompt low-res mask IoU, IoU-pred diff."""
    import numpy as np
    import torch

    from zsplg_fast.labeling.amg import MaskGenerator
    from zsplg_fast.labeling.amg_ops import point_grid, preprocess_shape

    gen = MaskGenerator(enc_a, dec_a, _cfg(32))
    x = gen._preprocess(image)
    ea, eb = enc_a({"image": x})["image_embeddings"], enc_b({"image": x})["image_embeddings"]
    s = gen.image_size
    in_h, in_w = preprocess_shape(image.shape[0], image.shape[1], s)
    pts = point_grid(32) * np.array([in_w, in_h])
    coords = torch.from_numpy(pts.astype(np.float32))[:, None].to(dev)
    labels = torch.ones(coords.shape[:2], device=dev)
    oa = dec_a({"image_embeddings": ea, "point_coords": coords, "point_labels": labels})
    ob = dec_b({"image_embeddings": ea, "point_coords": coords, "point_labels": labels})
    ma, mb = (torch.as_tensor(o["low_res_masks"]) > 0 for o in (oa, ob))
    inter = (ma & mb).flatten(2).sum(-1).float()
    union = (ma | mb).flatten(2).sum(-1).float()
    iou = torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(union))
    cos = torch.nn.functional.cosine_similarity(
        torch.as_tensor(ea).flatten(), torch.as_tensor(eb).flatten(), 0
    )
    diff = (torch.as_tensor(oa["iou_predictions"]) - torch.as_tensor(ob["iou_predictions"])).abs()
    return {
        "embedding_cosine": round(float(cos), 6),
        "prompt_mask_iou_mean": round(float(iou.mean()), 5),
        "prompt_mask_iou_min": round(float(iou.min()), 5),
        "iou_pred_max_abs_diff": round(float(diff.max()), 5),
    }


def _cfg(grid: int) -> Any:
    from zsplg_fast.config.labeling import AmgConfig

    return AmgConfig(points_per_side=grid, pred_iou_thresh=0.0, stability_score_thresh=0.0)


def _masks(records: list[dict], hw: tuple[int, int]) -> Any:
    from zsplg_fast.labeling.masks import MaskSet

    return MaskSet.from_records(records, hw).masks


# ---- sections -----------------------------------------------------------------------------------------


def section_env(smoke: bool, dev: Any) -> dict:
    import torch

    info: dict[str, Any] = {"torch": torch.__version__, "cuda": torch.version.cuda, "device": str(dev)}
    if dev.type == "cuda":
        p = torch.cuda.get_device_properties(dev)
        info |= {
            "gpu": p.name,
            "capability": f"{p.major}.{p.minor}",
            "memory_gib": round(p.total_memory / 2**30, 1),
        }
        info["bf16_supported"] = torch.cuda.is_bf16_supported()
    for mod in ("torchvision", "segment_anything", "open_clip", "numpy", "PIL", "onnxruntime", "tensorrt"):
        info[f"has_{mod}"] = importlib.util.find_spec(mod) is not None
    return info


def section_clip(smoke: bool, dev: Any) -> dict:
    """GEM dense features: fp32 vs bf16 autocast at 448 (smoke: ViT-S-32 at 64)."""
    import open_clip
    import torch

    from zsplg_fast.config.models import ClipConfig
    from zsplg_fast.models import DenseClip

    name, size = ("ViT-S-32", 64) if smoke else ("ViT-B-16", 448)
    torch.manual_seed(0)
    with torch.device(dev):
        model = open_clip.create_model(name, pretrained=None)
    c = ClipConfig()
    dense = DenseClip(
        model.visual, min(c.gem_depth, len(model.visual.transformer.resblocks)), None, c.gem_iters
    )
    dense = dense.eval().to(dev)
    out: dict[str, Any] = {"model": name, "size": size, "gem_depth": dense.gem_depth}
    for batch in (1, 2) if smoke else (1, 8):
        x = torch.randn(batch, 3, size, size, device=dev)
        with torch.inference_mode():
            f32 = dense(x)
            with torch.autocast(dev.type, dtype=torch.bfloat16):
                b16 = dense(x).float()
            runs = 1 if smoke else 5
            t32 = _times(lambda x=x: dense(x), runs, dev)
            with torch.autocast(dev.type, dtype=torch.bfloat16):
                t16 = _times(lambda x=x: dense(x), runs, dev)
        cos = torch.nn.functional.cosine_similarity(f32, b16, dim=1)  # per location
        out[f"batch{batch}"] = {
            "fp32_s": t32,
            "bf16_s": t16,
            "fp32_images_per_s": round(batch / min(t32), 2),
            "bf16_images_per_s": round(batch / min(t16), 2),
            "bf16_vs_fp32_cosine_mean": round(float(cos.mean()), 6),
            "bf16_vs_fp32_cosine_min": round(float(cos.min()), 6),
        }
    out["peak_mib"] = _peak_mib(dev)
    return out


def section_amg(smoke: bool, dev: Any, variant: str) -> dict:
    """Upstream fp32 vs ours fp32 / bf16 (+ full-resolution filter), fidelity to upstream and to fp32."""
    import torch
    from segment_anything import SamAutomaticMaskGenerator

    from zsplg_fast.bench.labeling import bench_image
    from zsplg_fast.bench.labeling_pipelines import best_iou
    from zsplg_fast.labeling.amg import MaskGenerator

    variant, grid, hw, runs = ("tiny", 4, (96, 128), 1) if smoke else (variant, 32, (768, 1024), 2)
    sam = _build_sam(variant, dev)
    image = bench_image(*hw, seed=0)
    kw = {"points_per_side": grid, "pred_iou_thresh": 0.0, "stability_score_thresh": 0.0}
    upstream = SamAutomaticMaskGenerator(sam, **kw)
    with torch.inference_mode():
        ref = _masks(upstream.generate(image), image.shape[:2])  # warm-up and reference
        t_up = _times(lambda: upstream.generate(image), runs, dev)
    out: dict[str, Any] = {"variant": variant, "grid": grid, "image_hw": list(hw), "upstream_fp32_s": t_up}
    ours: dict[str, Any] = {}
    for mode, autocast, full in (
        ("fp32", "fp32", False),
        ("bf16", "bf16", False),
        ("fp32_fullres", "fp32", True),
    ):
        enc, dec = _sam_engines(sam, dev, autocast)
        gen = MaskGenerator(enc, dec, _cfg(grid), full_res_filter=full)
        res = gen.generate_tensors(image)  # warm-up
        t = _times(lambda gen=gen: gen.generate_tensors(image), runs, dev)
        ours[mode] = {"s": t, "speedup_vs_upstream": round(min(t_up) / min(t), 2), "masks": len(res)}
        ours[mode]["stages_s"] = {k: round(v, 4) for k, v in gen.timings.items()}
        ours[mode]["mean_best_iou_vs_upstream"] = round(best_iou(ref, res.masks.cpu()), 5)
        ours[mode]["_masks"] = res.masks.cpu()
    ours["bf16"]["mean_best_iou_vs_ours_fp32"] = round(
        best_iou(ours["fp32"]["_masks"], ours["bf16"]["_masks"]), 5
    )
    for m in ours.values():
        m.pop("_masks")
    out["ours"] = ours
    out["masks_upstream"] = len(ref)
    e32, d32 = _sam_engines(sam, dev, "fp32")
    e16, d16 = _sam_engines(sam, dev, "bf16")
    out["bf16_vs_fp32_engines"] = _decoder_fidelity(sam, dev, image, e32, d32, e16, d16)
    out["peak_mib"] = _peak_mib(dev)
    return out


def section_compile(smoke: bool, dev: Any, variant: str) -> dict:
    """Ours with bf16 + torch.compile (inductor; smoke: the eager backend)."""
    from zsplg_fast.bench.labeling import bench_image
    from zsplg_fast.bench.labeling_pipelines import best_iou
    from zsplg_fast.labeling.amg import MaskGenerator

    variant, grid, hw, runs = ("tiny", 4, (96, 128), 1) if smoke else (variant, 32, (768, 1024), 3)
    sam = _build_sam(variant, dev)
    image = bench_image(*hw, seed=0)
    base = MaskGenerator(*_sam_engines(sam, dev, "bf16"), _cfg(grid), prompt_batch=grid * grid)
    ref = base.generate_tensors(image)
    t_eager = _times(lambda: base.generate_tensors(image), runs, dev)
    enc, dec = _sam_engines(sam, dev, "bf16", compile_backend="eager" if smoke else "inductor")
    gen = MaskGenerator(enc, dec, _cfg(grid), prompt_batch=grid * grid)  # fixed shapes: no recompiles
    t0 = time.perf_counter()
    first = gen.generate_tensors(image)
    compile_s = round(time.perf_counter() - t0, 2)
    t = _times(lambda: gen.generate_tensors(image), runs, dev)
    return {
        "variant": variant,
        "grid": grid,
        "bf16_eager_s": t_eager,
        "bf16_compile_first_call_s": compile_s,
        "bf16_compile_s": t,
        "speedup_vs_bf16_eager": round(min(t_eager) / min(t), 2),
        "stages_s": {k: round(v, 4) for k, v in gen.timings.items()},
        "mean_best_iou_vs_bf16_eager": round(best_iou(ref.masks.cpu(), first.masks.cpu()), 5),
        "peak_mib": _peak_mib(dev),
    }


def run_section(name: str, smoke: bool) -> dict:
    import torch

    dev = torch.device("cpu" if smoke or not torch.cuda.is_available() else "cuda")
    if not smoke and dev.type != "cuda":
        raise RuntimeError("no CUDA device visible to torch (use --smoke for the CPU code-path check)")
    torch.manual_seed(0)
    kind, _, variant = name.partition(":")
    fn = {"env": section_env, "clip": section_clip, "amg": section_amg, "compile": section_compile}[kind]
    return fn(smoke, dev, variant) if variant else fn(smoke, dev)


def main() -> None:
    ap = argparse.ArgumentParser(description="GPU check: AMG upstream vs ours, CLIP dense, bf16 fidelity")
    ap.add_argument("--smoke", action="store_true", help="CPU, tiny models: exercise every code path fast")
    ap.add_argument("--section", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--fragment", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--budget", type=float, default=TOTAL_BUDGET_S, help="seconds for all sections")
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
        try:
            result = {"status": "ok", **run_section(args.section, args.smoke)}
        except Exception as e:  # reported in the JSON, the other sections still run
            result = {"status": "error", "error": f"{type(e).__name__}: {e}"[:2000]}
        result |= {"wall_s": round(time.perf_counter() - t0, 2), "stubbed_modules": stubbed}
        Path(args.fragment).write_text(json.dumps(result, indent=2))
        return
    out = Path(args.out) if args.out else Path(os.environ.get("OUT") or ".") / "gpu_check.json"
    report: dict[str, Any] = {"smoke": args.smoke, "budget_s": args.budget, "sections": {}}
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for name, cap in SECTIONS.items():
            if args.smoke and name.endswith("vit_h"):  # same code path as vit_b with the tiny model
                continue
            left = args.budget - (time.perf_counter() - start)
            if left < 10:
                report["sections"][name] = {"status": "skipped", "reason": "time budget spent"}
                continue
            frag = Path(tmp) / f"{name.replace(':', '_')}.json"
            cmd = [sys.executable, __file__, "--section", name, "--fragment", str(frag)]
            cmd += ["--smoke"] if args.smoke else []
            limit = min(cap * (3 if args.smoke else 1), left)
            print(f"[gpu_check] {name} (cap {limit:.0f} s)", flush=True)
            try:
                proc = subprocess.run(cmd, timeout=limit, capture_output=True, text=True, cwd=ROOT)
                if frag.is_file():
                    report["sections"][name] = json.loads(frag.read_text())
                else:
                    report["sections"][name] = {
                        "status": "crashed",
                        "rc": proc.returncode,
                        "stderr": proc.stderr[-2000:],
                    }
            except subprocess.TimeoutExpired:
                report["sections"][name] = {"status": "timeout", "cap_s": round(limit, 1)}
            print(f"[gpu_check] {name}: {report['sections'][name].get('status')}", flush=True)
    report["total_s"] = round(time.perf_counter() - start, 1)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp_out = out.with_name(out.name + ".tmp")
    tmp_out.write_text(json.dumps(report, indent=2))
    os.replace(tmp_out, out)
    print(f"[gpu_check] wrote {out} in {report['total_s']} s", flush=True)


if __name__ == "__main__":
    main()
