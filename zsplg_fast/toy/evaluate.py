"""Held-out measurements of the toy models on the toy world's val split (never seen in training).

- SAM: point-prompt mIoU (one click at each instance's innermost pixel) through upstream
  ``SamPredictor``; AMG precision/recall (a mask matches an instance at IoU > 0.5).
- CLIP: accuracy of naming ground-truth instance masks by pooling dense (GEM) features inside them.
- Both: pseudo-label mIoU of AMG masks named by CLIP (the zero-shot labels), and the oracle ceiling
  (AMG masks named by their majority ground-truth class).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from zsplg_fast.config import AmgConfig
from zsplg_fast.data.synthetic import TOY_WORLD, WORLD_CLASSES, SynthSample, WorldSpec, render_split_sample
from zsplg_fast.labeling.classify import MaskClassifier, clip_preprocess
from zsplg_fast.labeling.masks import MaskSet, UpstreamMaskSource
from zsplg_fast.labeling.paint import paint
from zsplg_fast.labeling.pooling import pool_masks
from zsplg_fast.models.gem import DenseClip
from zsplg_fast.toy.clip import TOY_EVAL_TEMPLATES
from zsplg_fast.train.metrics import ConfusionMatrix

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclass
class ClipSettings:
    """How the toy CLIP names masks at label time."""

    image_size: int = 192
    gem_depth: int = 0
    templates: Sequence[str] = TOY_EVAL_TEMPLATES
    include_background: bool = True
    logit_scale: float = 100.0


@dataclass
class ToyAmg:
    """AMG knobs measured on the toy world (the rest stay at AmgConfig defaults)."""

    points_per_side: int = 16
    pred_iou_thresh: float = 0.5
    stability_score_thresh: float = 0.7
    extra: dict = field(default_factory=dict)

    def config(self) -> AmgConfig:
        """The AmgConfig these knobs describe."""
        return AmgConfig(
            points_per_side=self.points_per_side,
            pred_iou_thresh=self.pred_iou_thresh,
            stability_score_thresh=self.stability_score_thresh,
            **self.extra,
        )


def held_out(n: int, spec: WorldSpec = TOY_WORLD, start: int = 0) -> list[SynthSample]:
    """Val-split images ``start .. start+n-1`` of the toy world (the demo evaluates on the first ones).

    Settings are tuned on images from index 100 on and reported on the first ones.
    """
    return [render_split_sample(spec, "val", i) for i in range(start, start + n)]


def class_names(num_classes: int, include_background: bool) -> list[str]:
    """Names of the toy world's label classes (background first if included)."""
    names = list(WORLD_CLASSES[: num_classes + 1])
    return names if include_background else names[1:]


@torch.no_grad()
def text_embeddings(
    model: nn.Module, tokenizer: Callable, names: Sequence[str], templates: Sequence[str]
) -> torch.Tensor:
    """(C, D) float32 unit rows: mean over templates of the normalised prompt embeddings, renormalised."""
    rows = []
    for name in names:
        e = model.encode_text(tokenizer([t.replace("{}", name) for t in templates]))
        rows.append(F.normalize(F.normalize(e, dim=-1).mean(0), dim=-1))
    return torch.stack(rows)


@torch.no_grad()
def clip_mask_accuracy(
    model: nn.Module,
    tokenizer: Callable,
    samples: Sequence[SynthSample],
    settings: ClipSettings,
    num_classes: int = 6,
) -> dict[str, float]:
    """Accuracy of naming GT masks by pooled dense features.

    Returns ``acc`` (instances, K shapes only), ``acc_bg`` (instances and each image's background
    region, K + 1 names) and ``n`` (instances).
    """
    dense = DenseClip(model.visual, settings.gem_depth).eval()
    text = text_embeddings(model, tokenizer, class_names(num_classes, True), settings.templates)
    hit = hit_bg = total = total_bg = 0
    for s in samples:
        x = clip_preprocess(s.image, settings.image_size, CLIP_MEAN, CLIP_STD)
        feats = dense(x)[0]
        masks = torch.from_numpy(np.stack([m for _, m in s.instances] + [s.label == 0]))
        gt = torch.tensor([c for c, _ in s.instances] + [0])
        cos = F.normalize(pool_masks(masks, feats), dim=-1) @ text.T  # (K+1, C+1)
        n = len(s.instances)
        hit += int((cos[:n, 1:].argmax(1) + 1 == gt[:n]).sum())
        hit_bg += int((cos.argmax(1) == gt).sum())
        total += n
        total_bg += n + 1
    return {"acc": hit / max(1, total), "acc_bg": hit_bg / max(1, total_bg), "n": total}


def clip_eval_fn(
    n: int = 40,
    settings: Sequence[ClipSettings] = (
        ClipSettings(gem_depth=0),
        ClipSettings(gem_depth=1),
        ClipSettings(image_size=256, gem_depth=0),
    ),
) -> Callable:
    """A callable(model, tokenizer) -> {"acc_g<k>": ...} over ``n`` held-out images (used while training)."""
    samples = held_out(n)

    def run(model: nn.Module, tokenizer: Callable) -> dict[str, float]:
        out = {}
        for st in settings:
            r = clip_mask_accuracy(model, tokenizer, samples, st)
            out[f"acc_g{st.gem_depth}_s{st.image_size}"] = round(r["acc"], 3)
            out[f"accbg_g{st.gem_depth}_s{st.image_size}"] = round(r["acc_bg"], 3)
        return out

    return run


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum()) / max(1.0, float((a | b).sum()))


@torch.no_grad()
def sam_point_miou(sam: nn.Module, samples: Sequence[SynthSample]) -> dict[str, float]:
    """One positive click at each instance's innermost pixel through upstream SamPredictor (multimask).

    Returns mean IoU of the top-scored mask (``miou_top``), of the best of 3 (``miou_best``) and the
    fraction of instances whose top mask has IoU > 0.5 (``hit50``).
    """
    from segment_anything import SamPredictor

    pred = SamPredictor(sam)
    top, best = [], []
    for s in samples:
        pred.set_image(s.image)
        for _, m in s.instances:
            dist = cv2.distanceTransform(np.pad(m, 1).astype(np.uint8), cv2.DIST_L2, 5)[1:-1, 1:-1]
            y, x = np.unravel_index(int(dist.argmax()), dist.shape)
            masks, scores, _ = pred.predict(np.array([[x, y]]), np.array([1]), multimask_output=True)
            ious = [_iou(mk, m) for mk in masks]
            top.append(ious[int(np.argmax(scores))])
            best.append(max(ious))
    return {
        "miou_top": float(np.mean(top)),
        "miou_best": float(np.mean(best)),
        "hit50": float(np.mean(np.array(top) > 0.5)),
    }


def amg_masks(sam: nn.Module, samples: Sequence[SynthSample], amg: ToyAmg) -> list[MaskSet]:
    """AMG masks of every sample (upstream SamAutomaticMaskGenerator)."""
    src = UpstreamMaskSource(sam, amg.config())
    return [src(s.image) for s in samples]


def amg_precision_recall(samples: Sequence[SynthSample], mask_sets: Sequence[MaskSet]) -> dict[str, float]:
    """Precision (masks matching an instance at IoU > 0.5), recall (instances matched), masks per image."""
    n_masks = matched_masks = n_inst = matched_inst = 0
    for s, ms in zip(samples, mask_sets, strict=True):
        pm = ms.masks.numpy()
        ious = np.array([[_iou(p, m) for _, m in s.instances] for p in pm]).reshape(len(pm), len(s.instances))
        n_masks += len(pm)
        n_inst += len(s.instances)
        if len(pm):
            matched_masks += int((ious.max(1) > 0.5).sum())
            matched_inst += int((ious.max(0) > 0.5).sum())
    return {
        "precision": matched_masks / max(1, n_masks),
        "recall": matched_inst / max(1, n_inst),
        "masks_per_image": n_masks / max(1, len(samples)),
    }


def oracle_miou(samples: Sequence[SynthSample], mask_sets: Sequence[MaskSet], num_classes: int = 6) -> float:
    """mIoU when each AMG mask takes its majority GT class (background included): the mask-side ceiling."""
    cm = ConfusionMatrix(num_classes + 1)
    for s, ms in zip(samples, mask_sets, strict=True):
        lab = torch.from_numpy(s.label.astype(np.int64))
        cls = torch.tensor(
            [int(torch.bincount(lab[m], minlength=num_classes + 1).argmax()) for m in ms.masks]
        )
        cm.update(paint(ms.masks, cls.reshape(-1).long()), s.label)
    return cm.miou()


@torch.no_grad()
def pseudo_label_miou(
    model: nn.Module,
    tokenizer: Callable,
    samples: Sequence[SynthSample],
    mask_sets: Sequence[MaskSet],
    settings: ClipSettings,
    num_classes: int = 6,
    score_threshold: float = 0.0,
) -> float:
    """mIoU of zero-shot labels: AMG masks named by the toy CLIP's pooled dense features, painted."""
    names = class_names(num_classes, settings.include_background)
    clf = MaskClassifier(
        DenseClip(model.visual, settings.gem_depth).eval(),
        text_embeddings(model, tokenizer, names, settings.templates),
        image_size=settings.image_size,
        mean=CLIP_MEAN,
        std=CLIP_STD,
        logit_scale=settings.logit_scale,
        score_threshold=score_threshold,
        background_in_text=settings.include_background,
    )
    cm = ConfusionMatrix(num_classes + 1)
    for s, ms in zip(samples, mask_sets, strict=True):
        res = clf.classify(ms.masks, clf.features(s.image))
        cm.update(paint(ms.masks, res.classes), s.label)
    return cm.miou()
