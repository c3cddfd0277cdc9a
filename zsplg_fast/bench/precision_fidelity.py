"""What fp16 and int8 precision artifacts change, measured on trained networks on this CPU.

Random weights leave degenerate masks (one per image after NMS), so the end-to-end figures use the
shipped toy SAM and toy CLIP on the toy world; per-tensor parity is measured on any architecture.

- :func:`export_toy` exports ``sam_encoder``, ``sam_decoder_batched`` and ``clip_dense`` (the toy
  label settings of ``configs/toy_ci.yaml``) as fp32 ONNX;
- :func:`label_toy` labels images with the fast mask generator and the dense-CLIP classifier on
  onnxruntime CPU engines (what ``label --backend ort`` runs); with ``record`` it keeps the feeds each
  engine saw, which are the int8 calibration data (preprocessed exactly as at inference);
- :func:`compare_labels` gives mask fidelity (mean best IoU over the fp32 masks, counted per mask),
  the mask count ratio, and the label mIoU (against ground truth) of both runs;
- :func:`output_parity` gives cosine / max abs of an artifact's outputs against fp32 PyTorch, worst
  over the validation inputs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import torch

from zsplg_fast.bench.labeling_pipelines import best_iou

LABEL_ARTIFACTS = ("sam_encoder", "sam_decoder_batched", "clip_dense")


@dataclass
class ToyLabelSetup:
    """The toy models and label settings (``configs/toy_ci.yaml``), built once."""

    cfg: Any
    sam: Any
    clip: Any
    text: torch.Tensor  # (C, D) float32 unit rows, background first
    num_classes: int


def toy_setup() -> ToyLabelSetup:
    """Toy SAM and CLIP (shipped weights, sha256-checked) and the toy world's class embeddings."""
    from zsplg_fast.config import load_config
    from zsplg_fast.data.synthetic import TOY_WORLD, WORLD_CLASSES
    from zsplg_fast.models import build_clip, build_sam, build_text_embeddings
    from zsplg_fast.toy.registry import register

    register()
    cfg = load_config(resources.files("zsplg_fast") / "configs" / "toy_ci.yaml")
    clip = build_clip(cfg.clip.model)
    names = [[n] for n in WORLD_CLASSES[: TOY_WORLD.num_classes + 1]]
    text = build_text_embeddings(clip, names, cfg.clip.templates)
    return ToyLabelSetup(cfg, build_sam(cfg.sam.variant), clip, text, len(names))


def export_toy(
    setup: ToyLabelSetup, out: str | Path, exporters: Mapping[str, str] | None = None
) -> dict[str, Path]:
    """fp32 ONNX of :data:`LABEL_ARTIFACTS` for the toy models in ``out`` (validated against PyTorch).

    ``exporters``: artifact name → ``dynamo`` | ``legacy`` (default: each spec's own choice).
    """
    from zsplg_fast.export.onnx import export_onnx
    from zsplg_fast.export.specs import get_spec

    clip_opts = {"image_size": setup.cfg.clip.image_size, "gem_depth": setup.cfg.clip.gem_depth}
    jobs = (("sam_encoder", setup.sam, {}), ("sam_decoder_batched", setup.sam, {}))
    jobs += (("clip_dense", setup.clip, clip_opts),)
    paths = {}
    for name, model, opts in jobs:
        p = get_spec(name).bind(model, **opts)
        exporter = (exporters or {}).get(name)
        art = export_onnx(p, out, exporter=exporter, force=True, source={"weights": "toy"})
        paths[name] = Path(art.path)
    return paths


class RecordingEngine:
    """Wraps an Engine; keeps copies of the first ``keep`` feeds (numpy) it is called with."""

    def __init__(self, engine: Any, keep: int) -> None:
        self.engine, self.keep = engine, keep
        self.feeds: list[dict[str, np.ndarray]] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.engine, name)

    def __call__(self, feeds: Mapping[str, Any]) -> dict[str, Any]:
        if len(self.feeds) < self.keep:
            self.feeds.append({k: np.array(np.asarray(v), copy=True) for k, v in feeds.items()})
        return self.engine(feeds)


@dataclass
class Labeled:
    """One image's fast-AMG masks (K, H, W) bool and painted label (H, W) uint8."""

    masks: torch.Tensor
    label: np.ndarray


@dataclass
class LabelRun:
    """Per-image results and, when recorded, the feeds each engine saw (artifact name → feeds)."""

    images: list[Labeled]
    feeds: dict[str, list[dict[str, np.ndarray]]] = field(default_factory=dict)


def ort_label_engines(paths: Mapping[str, Path], threads: int | None = 1) -> dict[str, Any]:
    """OrtEngines (CPU) for :data:`LABEL_ARTIFACTS`, at the graph optimisation level each sidecar asks
    for (fp16: ``extended``, see export/precision.py)."""
    from zsplg_fast.engines.ort import OrtEngine
    from zsplg_fast.export.artifact import read_sidecar

    out = {}
    for name in LABEL_ARTIFACTS:
        level = read_sidecar(paths[name]).get("onnxruntime_cpu_optimization", "all")
        out[name] = OrtEngine(paths[name], intra_op_threads=threads, optimization=level)
    return out


@torch.no_grad()
def label_toy(
    setup: ToyLabelSetup, engines: Mapping[str, Any], images: Sequence[np.ndarray], record: int = 0
) -> LabelRun:
    """Label ``images`` ((H, W, 3) uint8) with the fast AMG + dense-CLIP classifier on ``engines``.

    ``record`` > 0 keeps up to that many feeds per engine (int8 calibration data).
    """
    from zsplg_fast.labeling.amg import MaskGenerator
    from zsplg_fast.labeling.classify import MaskClassifier
    from zsplg_fast.labeling.engines import dense_from_engine
    from zsplg_fast.labeling.paint import paint

    cfg = setup.cfg
    eng = {k: RecordingEngine(v, record) for k, v in engines.items()}
    gen = MaskGenerator(
        eng["sam_encoder"], eng["sam_decoder_batched"], cfg.amg, prompt_batch=cfg.label.prompt_batch
    )
    clf = MaskClassifier(
        dense_from_engine(eng["clip_dense"], torch.device("cpu")),
        setup.text,
        image_size=cfg.clip.image_size,
        mean=setup.clip.mean,
        std=setup.clip.std,
        logit_scale=cfg.classify.logit_scale,
        score_threshold=cfg.classify.score_threshold,
        background_in_text=cfg.classify.include_background_prompt,
    )
    out = []
    for image in images:
        ms = gen(image)
        cls = clf.classify(ms.masks, clf.features(image))
        out.append(Labeled(ms.masks.cpu(), paint(ms.masks, cls.classes, cfg.classify.uncovered)))
    return LabelRun(out, {k: e.feeds for k, e in eng.items()} if record else {})


def compare_labels(
    ref: LabelRun, ours: LabelRun, gts: Sequence[np.ndarray], num_classes: int
) -> dict[str, float]:
    """Mask fidelity and label quality of ``ours`` against the fp32 ``ref`` on the same images.

    Returns ``mean_best_iou`` (each fp32 mask's best IoU with any of ours, averaged over all fp32
    masks), ``worst_image_best_iou``, ``masks_ref``, ``masks_ours``, ``count_ratio``, ``miou_ref`` and
    ``miou_ours`` (label mIoU against ``gts``, %) and ``miou_diff_points`` (ours − ref).
    """
    from zsplg_fast.train.metrics import ConfusionMatrix

    per_image = [
        (best_iou(r.masks, o.masks), len(r.masks)) for r, o in zip(ref.images, ours.images, strict=True)
    ]
    n_ref = sum(n for _, n in per_image)
    n_ours = sum(len(o.masks) for o in ours.images)
    cms = [ConfusionMatrix(num_classes), ConfusionMatrix(num_classes)]
    for r, o, gt in zip(ref.images, ours.images, gts, strict=True):
        cms[0].update(r.label, gt)
        cms[1].update(o.label, gt)
    miou = [100.0 * cm.miou() for cm in cms]
    return {
        "images": len(per_image),
        "mean_best_iou": sum(v * n for v, n in per_image) / max(1, n_ref),
        "worst_image_best_iou": min(v for v, _ in per_image),
        "masks_ref": n_ref,
        "masks_ours": n_ours,
        "count_ratio": n_ours / max(1, n_ref),
        "miou_ref": miou[0],
        "miou_ours": miou[1],
        "miou_diff_points": miou[1] - miou[0],
    }


def output_parity(
    module: torch.nn.Module,
    output_names: Sequence[str],
    engine: Any,
    feeds: Sequence[Mapping[str, torch.Tensor]],
) -> dict[str, Any]:
    """Cosine and max abs of ``engine``'s outputs against fp32 ``module`` (PyTorch), worst over
    ``feeds`` (input name → tensor); per output and overall."""
    worst: dict[str, dict[str, float]] = {n: {"cosine": 1.0, "max_abs": 0.0} for n in output_names}
    for f in feeds:
        with torch.inference_mode():
            ref = module(**f)
        ref = ref if isinstance(ref, (tuple, list)) else (ref,)
        got = engine({k: v.numpy() for k, v in f.items()})
        for name, r in zip(output_names, ref, strict=True):
            a = r.detach().double().flatten()
            b = torch.as_tensor(np.asarray(got[name])).double().flatten()
            cos = float(torch.nn.functional.cosine_similarity(a, b, dim=0))
            w = worst[name]
            w["cosine"] = min(w["cosine"], cos)
            w["max_abs"] = max(w["max_abs"], float((a - b).abs().max()))
    return {
        "feeds": len(feeds),
        "outputs": worst,
        "cosine": min(w["cosine"] for w in worst.values()),
        "max_abs": max(w["max_abs"] for w in worst.values()),
    }
