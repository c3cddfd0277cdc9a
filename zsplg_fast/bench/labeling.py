"""``bench_labeling``: end-to-end labeling, upstream (A) vs ours on torch (B; B0 = before the decoder's
per-image work was shared), ORT (C), ORT INT8 (D) and torch under bf16 autocast (E).

One run, same images and weights for every variant, side by side per image (these machines are
noisy: compare ratios). Speed is measured on the real-size models (random weights): per grid and
variant, seconds per image by stage, images/s, peak RSS, the ratio to A. Fidelity is measured on
TRAINED weights, the shipped toy SAM + toy CLIP on the toy world (``labeling_toy``): mean best mask IoU
over tens of masks per image, count ratio, label mIoU difference. (The random-weight fidelity to A is
kept in the JSON: random weights leave one or two image-wide masks, so it says little.) A third check
runs the same AMG code on the colour SAM (``synthetic_sam``).

``zsplg-fast bench labeling`` (CLI owned elsewhere) and ``bench/labeling.py`` both call
:func:`bench_labeling` with a :class:`LabelBenchConfig`; results go to ``<out>.json`` and ``<out>.md``.
The configuration and variants live in ``labeling_config``, the structured-mask (colour SAM / SAM 2)
fidelity in ``labeling_colour``, the pipelines in ``labeling_pipelines``, the toy fidelity in
``labeling_toy`` and the markdown in ``labeling_report``.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from zsplg_fast.bench.labeling_config import TOY_FIDELITY_OF, VARIANTS, LabelBenchConfig, bench_image
from zsplg_fast.bench.labeling_export import export_engines
from zsplg_fast.bench.labeling_pipelines import (
    EnginePipeline,
    PipelineResult,
    UpstreamPipeline,
    build_models,
    fidelity,
    ort_engines,
    torch_engines,
)
from zsplg_fast.bench.labeling_report import render_markdown
from zsplg_fast.bench.machine import library_versions, machine_info, runtime_settings
from zsplg_fast.bench.timing import peak_rss_mib, reset_peak_rss
from zsplg_fast.config.export import DECODER_ATTENTION
from zsplg_fast.config.labeling import AmgConfig
from zsplg_fast.errors import ConfigError
from zsplg_fast.utils.io import atomic_write_json, atomic_write_text

__all__ = ["VARIANTS", "LabelBenchConfig", "bench_image", "bench_labeling", "run_variant"]


def _amg_kwargs(cfg: LabelBenchConfig, grid: int) -> dict[str, Any]:
    return {
        "points_per_side": grid,
        "points_per_batch": cfg.points_per_batch,
        "pred_iou_thresh": cfg.pred_iou_thresh,
        "stability_score_thresh": cfg.stability_score_thresh,
    }


def _summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    secs = [r["seconds"] for r in runs]
    stages = sorted({k for r in runs for k in r["stages"]})
    out: dict[str, Any] = {
        "seconds_per_image": round(statistics.median(secs), 3),
        "images_per_s": round(1.0 / statistics.median(secs), 5),
        "stages_s": {k: round(statistics.mean(r["stages"].get(k, 0.0) for r in runs), 3) for k in stages},
        "peak_rss_mib": round(max(r["peak_rss_mib"] for r in runs), 1),
        "runs_s": [round(s, 3) for s in secs],
    }
    if "prompt_batch" in runs[0]:
        out["prompt_batch"] = runs[0]["prompt_batch"]
    if "fidelity" in runs[0]:
        fid = [r["fidelity"] for r in runs]
        out["fidelity"] = {k: round(statistics.mean(f[k] for f in fid), 5) for k in fid[0]}
    return out


def _run(pipe: Callable[[np.ndarray], Any], image: np.ndarray) -> tuple[Any, dict[str, Any]]:
    reset_peak_rss()
    t0 = time.perf_counter()
    res = pipe(image)
    return res, {"seconds": time.perf_counter() - t0, "stages": res.stages, "peak_rss_mib": peak_rss_mib()}


def _family(cfg: LabelBenchConfig) -> str:
    from zsplg_fast.models.sam import sam_family

    return sam_family(cfg.sam_variant)


WARM_UP_CALLS = 2
"""Untimed calls before the timed images, every variant (A: encoder + dense CLIP). One was not enough:
measured on this CPU (vit_b, onnxruntime), the encoder took 12.6-16.7 s on the first image after one
warm-up call and 8.0-9.4 s from the next one on (7.6-7.9 s for the session alone)."""


def _ref_path(ref_dir: Path, grid: int, i: int) -> Path:
    return ref_dir / f"A_{grid}_{i}.pt"


def run_variant(
    cfg: LabelBenchConfig, variant: str, ref_dir: Path, export_dir: Path | None, log: Callable[[str], None]
) -> dict[str, Any]:
    """Every grid × image for one variant, in this process. A saves its masks and features under
    ``ref_dir``; B/C/D load them for fidelity. ``variant="export"`` only writes the ONNX artifacts."""
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    threads = torch.get_num_threads()
    models = build_models(cfg.sam_variant, cfg.clip_model, cfg.clip_size, cfg.seed)
    out: dict[str, Any] = {"settings": runtime_settings(ort_threads=threads), "runs": {}}
    if variant == "export":
        t0 = time.perf_counter()
        export_engines(
            models,
            export_dir or ref_dir,
            int8=cfg.precision == "int8",
            exporter=cfg.exporter,
            folded=cfg.decoder_attention == "folded",
        )
        out["export_s"] = round(time.perf_counter() - t0, 1)
        return out
    engines: Any = None
    if variant != "A":
        engines = ENGINES[variant](models, export_dir or ref_dir, threads)
    if variant == "B" and models.family == "sam":
        out["decoder_parity_vs_upstream"] = decoder_parity(models.sam)
    images = [bench_image(*cfg.image_hw, seed=cfg.seed + i) for i in range(cfg.images)]
    for grid in cfg.grids:
        amg = _amg_kwargs(cfg, grid)
        warm = bench_image(256, 320, seed=999)
        if variant == "A":
            pipe: Any = UpstreamPipeline(models, amg)
            pipe.warm_up(warm, calls=WARM_UP_CALLS)
        else:
            pipe = EnginePipeline(*engines, models, AmgConfig(**amg), prompt_batch=cfg.prompt_batch)
            for _ in range(WARM_UP_CALLS):  # first calls pay lazy init (ORT: 12-15 s) and first-touch memory
                pipe(warm)
        runs = []
        for i, image in enumerate(images):
            res, rec = _run(pipe, image)
            rec["load_1min"] = (_loadavg() or [None])[0]
            if variant == "A":
                torch.save({"masks": res.masks, "features": res.features}, _ref_path(ref_dir, grid, i))
            else:
                rec["prompt_batch"] = pipe.gen.batch_used
                ref = torch.load(_ref_path(ref_dir, grid, i), weights_only=True)
                rec["fidelity"] = fidelity(PipelineResult(ref["masks"], ref["masks"], ref["features"]), res)
            log(f"grid {grid} image {i} {variant}: {rec['seconds']:.1f} s, {len(res.masks)} masks")
            runs.append(rec)
        out["runs"][f"{grid}x{grid}"] = runs
    return out


@torch.inference_mode()
def decoder_parity(sam: Any, prompts: int = 16, seed: int = 0) -> dict[str, Any]:
    """Max abs difference of ``sam_decoder_image`` + ``sam_decoder_shared`` to upstream's
    ``PromptEncoder`` + ``MaskDecoder`` (multimask) on a random embedding and ``prompts`` point prompts."""
    from zsplg_fast.export.specs.sam_decoder_shared import SHARED_NAMES, SamDecoderImage, SamDecoderShared

    gen = torch.Generator().manual_seed(seed)
    pe = sam.prompt_encoder
    g, c, s = pe.image_embedding_size[0], pe.embed_dim, sam.image_encoder.img_size
    emb = torch.randn(1, c, g, g, generator=gen)
    coords, labels = torch.rand(prompts, 1, 2, generator=gen) * s, torch.ones(prompts, 1)
    sparse, dense = pe(points=(coords, labels), boxes=None, masks=None)
    ref = sam.mask_decoder(emb, pe.get_dense_pe(), sparse, dense, multimask_output=True)
    shared = dict(zip(SHARED_NAMES, SamDecoderImage(sam)(emb), strict=True))
    ours = SamDecoderShared(sam)(**shared, point_coords=coords, point_labels=labels)
    return {
        "prompts": prompts,
        "max_abs_low_res_masks": float((ours[0] - ref[0]).abs().max()),
        "max_abs_iou_predictions": float((ours[1] - ref[1]).abs().max()),
    }


def _ort(suffix: str) -> Callable[[Any, Path, int], Any]:
    def build(models: Any, where: Path, threads: int) -> Any:
        # written (and checked against the models) by the "export" step
        from zsplg_fast.bench.labeling_pipelines import BENCH_SPECS

        spec = BENCH_SPECS[models.family]
        names = [n for n in (spec.encoder, spec.decoder_image, spec.decoder, "clip_dense") if n]
        paths = {n: where / f"{n}.onnx" for n in names}
        paths |= {f"{n}.int8": where / f"{n}.int8.onnx" for n in names}
        return ort_engines(paths, suffix, threads=threads, family=models.family)

    return build


def _bf16(models: Any, where: Path, threads: int) -> Any:
    from zsplg_fast.labeling.engines import torch_autocast

    return torch_engines(models, autocast=torch_autocast("bf16", torch.device("cpu")))


ENGINES: dict[str, Callable[[Any, Path, int], Any]] = {
    "B": lambda models, where, threads: torch_engines(models),
    "B0": lambda models, where, threads: torch_engines(models, shared=False),
    "C": _ort(""),
    "D": _ort(".int8"),
    "E": _bf16,
}
"""Variant → (models, export folder, threads) → (encoder, decoder, clip_dense, decoder_image) engines."""


def _in_subprocess(
    cfg: LabelBenchConfig, variant: str, ref_dir: Path, export_dir: Path | None, log: Callable[[str], None]
) -> dict[str, Any]:
    """``run_variant`` in a fresh interpreter (its memory is returned when it exits)."""
    frag = ref_dir / f"{variant}.json"
    cmd = [sys.executable, "-m", "zsplg_fast.bench.labeling", "--worker", variant, "--ref", str(ref_dir)]
    cmd += ["--config", json.dumps(asdict(cfg)), "--fragment", str(frag)]
    cmd += ["--export-dir", str(export_dir)] if export_dir else []
    env = {**os.environ, "MALLOC_ARENA_MAX": os.environ.get("MALLOC_ARENA_MAX", "2")}
    err = ref_dir / f"{variant}.stderr"
    with open(err, "w", encoding="utf-8") as stderr:
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=stderr, text=True)
        for line in proc.stdout or []:  # progress as it happens
            log(line.rstrip())
        rc = proc.wait()
    if rc != 0 or not frag.is_file():
        raise RuntimeError(f"bench worker {variant} failed (rc {rc}): {err.read_text()[-3000:]}")
    return json.loads(frag.read_text())


def bench_labeling(cfg: LabelBenchConfig | None = None, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Run the benchmark; write ``cfg.out``.json/.md (unless ``out`` is None) and return the report.

    Variants run one after the other (A first), each in its own process when ``cfg.isolate`` (so one
    variant's allocator and ORT arenas do not inflate the next one's memory), on the same images.
    """
    cfg = cfg or LabelBenchConfig()
    if cfg.decoder_attention not in DECODER_ATTENTION:
        valid = ", ".join(DECODER_ATTENTION)
        raise ConfigError("bench.decoder_attention", cfg.decoder_attention, "unknown form", valid=valid)
    variants = tuple(dict.fromkeys((*cfg.variants, *(("D",) if cfg.precision == "int8" else ()))))
    if any(v not in VARIANTS for v in variants) or "A" not in variants:
        known = ",".join(VARIANTS)
        raise ConfigError("bench.variants", variants, f"must include A; known: {known}", valid=known)
    variants = ("A", *(v for v in variants if v != "A"))
    run = _in_subprocess if cfg.isolate else run_variant
    load0 = _loadavg()
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="zsplg-bench-") as tmp:
        ref_dir = Path(tmp)
        export_dir = Path(cfg.export_dir) if cfg.export_dir else ref_dir / "export"
        export_s = None
        if {"C", "D"} & set(variants):
            log(f"exporting / checking ONNX artifacts in {export_dir}")
            export_s = run(cfg, "export", ref_dir, export_dir, log)["export_s"]
        per_variant: dict[str, Any] = {}
        for v in variants:
            log(f"variant {v}: {VARIANTS[v]}")
            per_variant[v] = run(cfg, v, ref_dir, export_dir, log)
            results = _summaries(per_variant)
            report = _report(cfg, variants, per_variant["A"]["settings"], load0, export_s, results, None)
            if "decoder_parity_vs_upstream" in per_variant[v]:
                report["decoder_parity_vs_upstream"] = per_variant[v]["decoder_parity_vs_upstream"]
            _write(cfg, report, log)  # partial results after each variant
    from zsplg_fast.bench.labeling_colour import colour2_fidelity, colour_fidelity

    colour = colour2_fidelity if _family(cfg) == "sam2" else colour_fidelity
    report["colour_sam_fidelity"] = colour(cfg, log) if cfg.colour_fidelity else None
    _write(cfg, report, log)
    if cfg.toy_images:
        report["toy_fidelity"] = _toy_fidelity(cfg, variants, log)
        _write(cfg, report, log)
    return report


def _toy_fidelity(cfg: LabelBenchConfig, variants: tuple[str, ...], log: Callable[[str], None]) -> dict:
    """Every variant's fidelity on trained weights (toy SAM + toy CLIP), see ``labeling_toy``."""
    from zsplg_fast.bench.labeling_toy import ToyFidelityConfig, toy_fidelity

    toy = tuple(dict.fromkeys(TOY_FIDELITY_OF[v] for v in variants if v in TOY_FIDELITY_OF))
    t0 = time.perf_counter()
    toy_cfg = ToyFidelityConfig(
        images=cfg.toy_images, grid=cfg.toy_grid, decoder_attention=cfg.decoder_attention
    )
    out = toy_fidelity(toy, toy_cfg, log=log)
    out["seconds"] = round(time.perf_counter() - t0, 1)
    out["speed_variant_to_toy_variant"] = {v: TOY_FIDELITY_OF[v] for v in variants if v in TOY_FIDELITY_OF}
    return out


def _summaries(per_variant: dict[str, Any]) -> dict[str, Any]:
    results: dict[str, Any] = {}
    for grid in per_variant["A"]["runs"]:
        summary = {v: _summarise(r["runs"][grid]) for v, r in per_variant.items() if grid in r["runs"]}
        for v in summary:
            summary[v]["speedup_vs_A"] = round(
                summary["A"]["seconds_per_image"] / summary[v]["seconds_per_image"], 2
            )
        results[grid] = summary
    return results


def _report(
    cfg: LabelBenchConfig,
    variants: tuple[str, ...],
    settings: dict[str, Any],
    load0: list[float] | None,
    export_s: float | None,
    results: dict[str, Any],
    colour: list[dict[str, Any]] | None,
) -> dict[str, Any]:
    return {
        "benchmark": "labeling",
        "config": asdict(cfg),
        "variants": {v: VARIANTS[v] for v in variants},
        "machine": machine_info(),
        "libraries": library_versions(),
        "settings": settings,
        "load_average_start_end": [load0, _loadavg()],
        "export_s": export_s,
        "results": results,
        "colour_sam_fidelity": colour,
    }


def _write(cfg: LabelBenchConfig, report: dict[str, Any], log: Callable[[str], None]) -> None:
    if cfg.out:
        atomic_write_json(Path(f"{cfg.out}.json"), report)
        atomic_write_text(Path(f"{cfg.out}.md"), render_markdown(report))
        log(f"wrote {cfg.out}.json and {cfg.out}.md")


def _loadavg() -> list[float] | None:
    try:
        return [round(float(x), 2) for x in Path("/proc/loadavg").read_text().split()[:3]]
    except OSError:
        return None


def _say(message: str) -> None:
    print(message, flush=True)


def _worker_main() -> None:
    """``python -m zsplg_fast.bench.labeling --worker V ...``: one variant, result as a JSON fragment."""
    import argparse
    import warnings

    ap = argparse.ArgumentParser()
    for flag in ("--worker", "--config", "--ref", "--fragment", "--export-dir"):
        ap.add_argument(flag, default=None)
    a = ap.parse_args()
    raw = json.loads(a.config)
    raw = {k: tuple(v) if isinstance(v, list) else v for k, v in raw.items()}
    warnings.simplefilter("ignore")
    out = run_variant(
        LabelBenchConfig(**raw), a.worker, Path(a.ref), a.export_dir and Path(a.export_dir), _say
    )
    atomic_write_json(Path(a.fragment), out)


if __name__ == "__main__":
    _worker_main()
