"""Sections of the GPU check (``bench/gpu_check.py`` runs each in its own subprocess with a time cap).

Each ``section_*`` returns a JSON-able dict. Every section also runs with ``smoke=True`` on the CPU with
the tiny SAM, a small CLIP and a 4×4 grid, so ``tests/bench/test_gpu_check.py`` executes every code path.
"""

from __future__ import annotations

import importlib.util
import tempfile
import time
from pathlib import Path
from typing import Any

# What the running section has measured so far; the worker writes it out when stopped at its time cap.
PARTIAL: dict[str, Any] = {}

# ---- helpers ---------------------------------------------------------------------


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
        sam = SAM_BUILDERS[variant]()
    # Sam's pixel_mean/std buffers come from the legacy torch.Tensor(list) constructor, which ignores the
    # device context; upstream's predictor reads Sam.device from them, so move everything explicitly.
    return sam.to(dev).eval()


def _sam_engines(
    sam: Any, dev: Any, autocast: str, compile_backend: str | None = None, shared: bool = False
) -> tuple[Any, Any, Any]:
    """(encoder, decoder, decoder_image) TorchEngines from the export specs' modules: the one-piece
    ``sam_decoder_batched`` (decoder_image None), or with ``shared`` the ``sam_decoder_shared`` pair whose
    image engine computes the first block's prompt-independent work once per image."""
    import torch

    from zsplg_fast.engines.torch_engine import TorchEngine
    from zsplg_fast.export.specs import get_spec

    names = ["sam_encoder", "sam_decoder_shared" if shared else "sam_decoder_batched"]
    names += ["sam_decoder_image"] if shared else []
    out = []
    for name in names:
        p = get_spec(name).bind(sam, **({"validation_batches": (1,)} if name == "sam_encoder" else {}))
        module = (
            torch.compile(p.module, backend=compile_backend, dynamic=False) if compile_backend else p.module
        )
        out.append(TorchEngine(module, p.inputs, p.outputs, device=str(dev), autocast=autocast, name=name))
    return out[0], out[1], (out[2] if shared else None)


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


def _colour_check(dev: Any, grid: int, hw: tuple[int, int]) -> dict:
    """Upstream vs ours on the colour SAM (structured masks, upstream's interfaces): mask fidelity."""
    from segment_anything import SamAutomaticMaskGenerator

    from zsplg_fast.bench.labeling import bench_image
    from zsplg_fast.bench.labeling_pipelines import best_iou
    from zsplg_fast.bench.synthetic_sam import build_colour_sam, sam_module_engines
    from zsplg_fast.labeling.amg import MaskGenerator

    sam = build_colour_sam(1024).to(dev)
    image = bench_image(*hw, seed=100)
    ref = _masks(SamAutomaticMaskGenerator(sam, **_kw(grid)).generate(image), hw)
    gen = MaskGenerator(*sam_module_engines(sam, device=str(dev)), _cfg(grid))
    ours = gen.generate_tensors(image)
    return {
        "masks_upstream": len(ref),
        "masks_ours": len(ours),
        "mean_best_iou": round(best_iou(ref, ours.masks.cpu()), 5),
    }


def _kw(grid: int) -> dict[str, Any]:
    return {"points_per_side": grid, "pred_iou_thresh": 0.0, "stability_score_thresh": 0.0}


def section_amg(smoke: bool, dev: Any, variant: str) -> dict:
    """Ours fp32 / bf16 (+ full-resolution filter) on a random-weight SAM (speed; bf16 vs fp32), mask
    fidelity to upstream on the colour SAM (structured masks), then upstream's own time on the same SAM.

    Upstream goes last: at thresholds 0 it RLE-encodes every noisy random-weight mask in Python, which can
    outlast the section's cap; what was measured before is still reported (``PARTIAL``)."""
    import torch
    from segment_anything import SamAutomaticMaskGenerator

    from zsplg_fast.bench.labeling import bench_image
    from zsplg_fast.bench.labeling_pipelines import best_iou
    from zsplg_fast.labeling.amg import MaskGenerator

    variant, grid, hw, runs = ("tiny", 4, (96, 128), 1) if smoke else (variant, 32, (768, 1024), 2)
    sam = _build_sam(variant, dev)
    image = bench_image(*hw, seed=0)
    out: dict[str, Any] = PARTIAL  # filled as it goes: a section stopped at its cap still reports
    out |= {"variant": variant, "grid": grid, "image_hw": list(hw)}
    ours: dict[str, Any] = {}
    out["ours"] = ours
    kept: dict[str, Any] = {}
    for mode, autocast, full, shared in (
        ("fp32", "fp32", False, False),
        ("fp32_shared", "fp32", False, True),  # the decoder pair: first block's image side once per image
        ("bf16", "bf16", False, False),
        ("bf16_shared", "bf16", False, True),
        ("fp32_fullres", "fp32", True, False),
    ):
        enc, dec, dimg = _sam_engines(sam, dev, autocast, shared=shared)
        gen = MaskGenerator(enc, dec, _cfg(grid), full_res_filter=full, decoder_image=dimg)
        res = gen.generate_tensors(image)  # warm-up
        t = _times(lambda gen=gen: gen.generate_tensors(image), runs, dev)
        ours[mode] = {"s": t, "masks": len(res), "stages_s": {k: round(v, 4) for k, v in gen.timings.items()}}
        kept[mode] = res.masks.cpu()
    ours["bf16"]["mean_best_iou_vs_ours_fp32"] = round(best_iou(kept["fp32"], kept["bf16"]), 5)
    ours["fp32_shared"]["mean_best_iou_vs_ours_fp32"] = round(best_iou(kept["fp32"], kept["fp32_shared"]), 5)
    e32, d32, _ = _sam_engines(sam, dev, "fp32")
    e16, d16, _ = _sam_engines(sam, dev, "bf16")
    out["bf16_vs_fp32_engines"] = _decoder_fidelity(sam, dev, image, e32, d32, e16, d16)
    out["colour_sam_vs_upstream"] = _colour_check(dev, grid, hw)
    out["peak_mib"] = _peak_mib(dev)
    upstream = SamAutomaticMaskGenerator(sam, **_kw(grid))
    with torch.inference_mode():
        t_up = _times(lambda: upstream.generate(image), 1, dev)  # one run: see the docstring
        ref = _masks(upstream.generate(image), image.shape[:2]) if smoke else None
    out["upstream_fp32_s"] = t_up
    for m in ours.values():
        m["speedup_vs_upstream"] = round(min(t_up) / min(m["s"]), 2)
    if ref is not None:  # smoke: the tiny SAM is cheap enough to compare final masks too
        for mode, masks in kept.items():
            ours[mode]["mean_best_iou_vs_upstream"] = round(best_iou(ref, masks), 5)
    return out


def section_compile(smoke: bool, dev: Any, variant: str) -> dict:
    """Ours (shared decoder pair) with bf16 + torch.compile (inductor; smoke: the eager backend)."""
    from zsplg_fast.bench.labeling import bench_image
    from zsplg_fast.bench.labeling_pipelines import best_iou
    from zsplg_fast.labeling.amg import MaskGenerator

    variant, grid, hw, runs = ("tiny", 4, (96, 128), 1) if smoke else (variant, 32, (768, 1024), 3)
    sam = _build_sam(variant, dev)
    image = bench_image(*hw, seed=0)
    enc, dec, dimg = _sam_engines(sam, dev, "bf16", shared=True)  # the decoder pair, as `label` runs it
    base = MaskGenerator(enc, dec, _cfg(grid), prompt_batch=grid * grid, decoder_image=dimg)
    ref = base.generate_tensors(image)
    t_eager = _times(lambda: base.generate_tensors(image), runs, dev)
    backend = "eager" if smoke else "inductor"
    enc, dec, dimg = _sam_engines(sam, dev, "bf16", compile_backend=backend, shared=True)
    # one prompt batch of the whole grid: fixed shapes, no recompiles
    gen = MaskGenerator(enc, dec, _cfg(grid), prompt_batch=grid * grid, decoder_image=dimg)
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


def _providers() -> list[str]:
    """onnxruntime providers worth timing here, by our short names (GPU ones only when they are listed)."""
    if importlib.util.find_spec("onnxruntime") is None:
        return []
    import onnxruntime as ort

    full = {"CUDAExecutionProvider": "cuda", "TensorrtExecutionProvider": "tensorrt"}
    return [short for name, short in full.items() if name in ort.get_available_providers()]


def _parity(ref: dict[str, Any], got: dict[str, Any]) -> dict[str, Any]:
    import numpy as np

    from zsplg_fast.export.parity import compare
    from zsplg_fast.export.tensors import Tolerance

    out = {}
    for k, r in ref.items():
        g = got[k]
        g = g.detach().float().cpu().numpy() if hasattr(g, "detach") else np.asarray(g)
        q = compare(
            k, r.detach().float().cpu().numpy(), g, Tolerance(atol=1e-3, rtol=1e-3, min_cosine=0.9999)
        )
        out[k] = {"max_abs": float(f"{q.max_abs:.3g}"), "cosine": round(q.cosine, 7), "passed": q.passed}
    return out


def section_engines(smoke: bool, dev: Any) -> dict:
    """Export the batched SAM decoder (and the segmenter) to ONNX, then run them on every GPU runtime that
    imports here (onnxruntime CUDA / TensorRT providers, TensorRT plans) with parity against torch on the
    same device. Runtimes that do not import are listed with the reason, never silently skipped."""
    import torch

    from zsplg_fast.engines.ort import OrtEngine
    from zsplg_fast.export.onnx import export_onnx
    from zsplg_fast.export.specs import get_spec

    variant = "tiny" if smoke else "vit_b"
    sam = _build_sam(variant, torch.device("cpu"))
    jobs = [("sam_decoder_batched", sam, {})]
    out: dict[str, Any] = {"variant": variant, "artifacts": {}}
    providers = _providers() if dev.type == "cuda" else []
    runtimes = [f"ort-{p}" for p in providers] + (["ort-cpu"] if smoke else [])
    has_trt = importlib.util.find_spec("tensorrt") is not None and dev.type == "cuda"
    runtimes += ["tensorrt"] if has_trt else []
    out["runtimes"] = runtimes
    out["not_run"] = {
        **(
            {} if providers or smoke else {"onnxruntime-gpu": "no CUDA/TensorRT provider in this onnxruntime"}
        ),
        **({} if has_trt else {"tensorrt": "the tensorrt module does not import here"}),
    }
    with tempfile.TemporaryDirectory() as tmp:
        for name, model, opts in jobs:
            p = get_spec(name).bind(model, **opts)
            t0 = time.perf_counter()
            art = export_onnx(p, Path(tmp) / "export")
            rec: dict[str, Any] = {"export_s": round(time.perf_counter() - t0, 2)}
            rec["onnx_cpu_parity"] = art.sidecar["validation"]["outputs"]
            module = p.module.to(dev)
            feeds = {k: v.to(dev) for k, v in p.validation[0].items()}
            with torch.inference_mode():
                ref = module(**feeds)
            ref = dict(
                zip([s.name for s in p.outputs], ref if isinstance(ref, tuple) else (ref,), strict=True)
            )
            for rt in runtimes:
                try:
                    if rt == "tensorrt":
                        from zsplg_fast.engines import load_engine
                        from zsplg_fast.export.tensorrt import build_engine

                        plan, _ = build_engine(art.path, Path(tmp) / "engines", precision="fp32")
                        engine = load_engine(plan.path, "trt")
                    else:
                        engine = OrtEngine(art.path, providers=[rt.removeprefix("ort-")])
                    got = engine(feeds if rt != "ort-cpu" else {k: v.cpu().numpy() for k, v in feeds.items()})
                    rec[rt] = {"status": "ok", **_parity(ref, got)}
                except Exception as e:  # one runtime failing must not hide the others
                    rec[rt] = {"status": "error", "error": f"{type(e).__name__}: {e}"[:500]}
            out["artifacts"][name] = rec
    return out


from gpu_label import section_label  # noqa: E402  (beside this file; needs PARTIAL and _peak_mib above)


def section_sam2(smoke: bool, dev: Any, variant: str) -> dict:
    """SAM 2 AMG at 32×32 on a 1024×768 image (``bench/gpu_check_sam2.py``'s rows for ``variant``):
    upstream ``SAM2AutomaticMaskGenerator`` fp32 vs ours fp32 / bf16, default thresholds and thresholds 0;
    smoke: ``sam2_tiny``, 4×4, 96×128 on the CPU."""
    import gpu_check_sam2  # beside this file

    sam, grid, hw = ("sam2_tiny", 4, (96, 128)) if smoke else (variant, 32, (768, 1024))
    PARTIAL.update({"variant": sam, "grid": grid, "image_hw": list(hw)})
    PARTIAL["rows"] = gpu_check_sam2.check_model(sam, grid, hw, dev, 1 if smoke else 3)
    return dict(PARTIAL)


__all__ = ["PARTIAL", "section_label", "section_sam2"]
