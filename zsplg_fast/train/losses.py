"""UniMatch losses, CutMix target pasting, zero-shot fusion (online) and the enhanced-label rule.

Follows UniMatch ``unimatch.py`` (loss terms and weights, confidence threshold, division by the number
of non-padded pixels) and ``util/ohem.py`` (probability-OHEM for the labeled loss).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from zsplg_fast.config.train import check_enhance_scope
from zsplg_fast.errors import ConfigError

IGNORE = 255
FUSIONS = ("online", "two_stage", "none")


@dataclass
class UnlabeledTargets:
    """Everything the unlabeled losses need for one view, all (B, H, W).

    ``label``: int64 pseudo label (argmax of the weak prediction); ``conf``: float max softmax in [0, 1];
    ``ignore``: int64, 255 = padded pixel (excluded and not counted), anything else = real;
    ``zero_shot``: int64 zero-shot label, 255 = no zero-shot label for that pixel.
    """

    label: torch.Tensor
    conf: torch.Tensor
    ignore: torch.Tensor
    zero_shot: torch.Tensor

    def paste(self, other: UnlabeledTargets, box: torch.Tensor) -> UnlabeledTargets:
        """CutMix: where ``box`` (B, H, W) == 1 take ``other``'s label, confidence, ignore and zero-shot."""
        m = box == 1
        return UnlabeledTargets(
            torch.where(m, other.label, self.label),
            torch.where(m, other.conf, self.conf),
            torch.where(m, other.ignore, self.ignore),
            torch.where(m, other.zero_shot, self.zero_shot),
        )


def targets_from_logits(
    logits: torch.Tensor, ignore: torch.Tensor, zero_shot: torch.Tensor
) -> UnlabeledTargets:
    """logits: (B, C, H, W) (detached) → pseudo label and confidence from the float32 softmax."""
    prob = logits.detach().float().softmax(dim=1)
    conf, label = prob.max(dim=1)
    return UnlabeledTargets(label, conf, ignore, zero_shot)


def paste_images(img: torch.Tensor, img_mix: torch.Tensor, box: torch.Tensor) -> torch.Tensor:
    """CutMix images: (B, 3, H, W) with ``img_mix`` pasted where box (B, H, W) == 1 (new tensor)."""
    return torch.where((box == 1).unsqueeze(1), img_mix, img)


def unlabeled_loss(
    logits: torch.Tensor,
    t: UnlabeledTargets,
    conf_thresh: float,
    fusion: str = "none",
    smoothing: float = 0.1,
) -> torch.Tensor:
    """Per-view unlabeled loss, a float32 scalar.

    Pixels with ``ignore != 255`` count in the denominator (guarded to ≥ 1, so an all-padded batch
    gives 0, not NaN). Among them: confident pixels (conf ≥ τ) add CE(logits, pseudo label);
    with ``fusion == "online"`` the others add label-smoothed CE (ε = ``smoothing``) to the zero-shot
    label where one exists (zero_shot != 255). Otherwise (UniMatch) they add nothing.
    """
    logits = logits.float()
    valid = t.ignore != IGNORE
    confident = (t.conf >= conf_thresh) & valid
    ce = F.cross_entropy(logits, t.label, reduction="none")
    loss = (ce * confident).sum()
    if fusion == "online":
        fallback = ~confident & valid & (t.zero_shot != IGNORE)
        zs = torch.where(fallback, t.zero_shot, torch.full_like(t.zero_shot, IGNORE))
        ls = F.cross_entropy(logits, zs, reduction="none", ignore_index=IGNORE, label_smoothing=smoothing)
        loss = loss + ls.sum()
    return loss / valid.sum().clamp(min=1)


@dataclass
class UniMatchLoss:
    """The combined loss and its parts (float32 scalars) and the confident-pixel ratio of the weak view."""

    loss: torch.Tensor
    loss_x: torch.Tensor
    loss_s1: torch.Tensor
    loss_s2: torch.Tensor
    loss_fp: torch.Tensor
    mask_ratio: float


def unimatch_loss(
    criterion_l: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    pred_x: torch.Tensor,
    mask_x: torch.Tensor,
    pred_s1: torch.Tensor,
    pred_s2: torch.Tensor,
    pred_fp: torch.Tensor,
    weak: UnlabeledTargets,
    mix: UnlabeledTargets,
    box1: torch.Tensor,
    box2: torch.Tensor,
    conf_thresh: float = 0.95,
    fusion: str = "none",
    smoothing: float = 0.1,
) -> UniMatchLoss:
    """loss = (loss_x + 0.25·loss_s1 + 0.25·loss_s2 + 0.5·loss_fp) / 2, as upstream.

    ``pred_*``: (B, C, H, W) logits; ``mask_x``: (B, H, W) int64 (255 ignored); ``weak``: targets of the
    unlabeled weak view; ``mix``: targets of the mix batch (its eval-mode prediction); ``box1/2``:
    (B, H, W) CutMix boxes of the two strong views. The strong views learn the pasted targets; the fp
    view learns the weak targets.
    """
    loss_x = criterion_l(pred_x.float(), mask_x)
    loss_s1 = unlabeled_loss(pred_s1, weak.paste(mix, box1), conf_thresh, fusion, smoothing)
    loss_s2 = unlabeled_loss(pred_s2, weak.paste(mix, box2), conf_thresh, fusion, smoothing)
    loss_fp = unlabeled_loss(pred_fp, weak, conf_thresh, fusion, smoothing)
    loss = (loss_x + 0.25 * loss_s1 + 0.25 * loss_s2 + 0.5 * loss_fp) / 2.0
    valid = weak.ignore != IGNORE
    ratio = float(((weak.conf >= conf_thresh) & valid).sum()) / max(int(valid.sum()), 1)
    return UniMatchLoss(loss, loss_x, loss_s1, loss_s2, loss_fp, ratio)


def masked_ce(logits: torch.Tensor, target: torch.Tensor, ignore_index: int = IGNORE) -> torch.Tensor:
    """Mean CE over pixels whose target is not ``ignore_index``; 0 (not NaN) when there are none.

    logits (B, C, H, W) float, target (B, H, W) int64 → float32 scalar. Equals
    ``nn.CrossEntropyLoss(ignore_index=255)`` whenever at least one pixel counts.
    """
    total = F.cross_entropy(logits.float(), target, ignore_index=ignore_index, reduction="sum")
    return total / (target != ignore_index).sum().clamp(min=1)


class CrossEntropy(torch.nn.Module):
    """Upstream CELoss(ignore_index=255), guarded against an all-ignore batch (see :func:`masked_ce`)."""

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return masked_ce(logits, target)


class ProbOhemCrossEntropy(torch.nn.Module):
    """Probability OHEM CE (follows UniMatch util/ohem.py): keep pixels whose true-class probability is
    below ``thresh`` (raised so at least ``min_kept`` pixels stay), mean CE over them."""

    def __init__(self, ignore_index: int = IGNORE, thresh: float = 0.7, min_kept: int = 200000) -> None:
        super().__init__()
        self.ignore_index, self.thresh, self.min_kept = ignore_index, float(thresh), int(min_kept)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """logits (B, C, H, W), target (B, H, W) int64 → scalar."""
        flat = target.reshape(-1)
        valid = flat != self.ignore_index
        n_valid = int(valid.sum())
        if n_valid > 0 and self.min_kept <= n_valid:
            prob = logits.detach().softmax(1).transpose(0, 1).reshape(logits.shape[1], -1)
            p_true = prob.gather(0, (flat * valid).unsqueeze(0)).squeeze(0).masked_fill(~valid, 1.0)
            thresh = self.thresh
            if self.min_kept > 0:
                kth = p_true.sort().values[min(p_true.numel(), self.min_kept) - 1]
                thresh = max(thresh, float(kth))
            valid = valid & (p_true <= thresh)
        flat = flat.masked_fill(~valid, self.ignore_index).view_as(target)
        return masked_ce(logits, flat, self.ignore_index)


CRITERIA: dict[str, Callable[..., torch.nn.Module]] = {
    "ce": lambda **kw: CrossEntropy(),
    "ohem": lambda **kw: ProbOhemCrossEntropy(IGNORE, kw.get("thresh", 0.7), kw.get("min_kept", 200000)),
}


def enhanced_label(
    prob: torch.Tensor,
    zero_shot: torch.Tensor | None,
    threshold: float,
    fallback: str = "zero_shot",
    scope: str = "all",
) -> torch.Tensor:
    """The enhanced label of one image (both fusion readings use this rule at enhance time).

    prob: (C, H, W) float softmax; zero_shot: (H, W) int64 (255 = none) or None.
    Returns (H, W) uint8: argmax where max prob ≥ ``threshold``; elsewhere the zero-shot label
    (``fallback='zero_shot'``; where that is 255 or missing, the prediction), the prediction itself
    (``'prediction'``), or 255 (``'ignore'``).

    ``scope='background'`` lets a confident prediction replace only zero-shot background (index 0, also
    what the labeler paints where no mask lies) or 255: the segmenter adds objects the labeler missed
    but never renames or erases a mask the labeler named. It needs ``fallback='zero_shot'``.
    """
    if fallback not in FALLBACKS:
        raise ConfigError("train.enhance.fallback", fallback, "unknown fallback", ", ".join(FALLBACKS))
    check_enhance_scope(scope, fallback)
    conf, pred = prob.max(dim=0)
    other = FALLBACKS[fallback](pred, zero_shot)
    take = conf >= threshold
    if scope == "background" and zero_shot is not None:
        zs = zero_shot.to(pred.device)
        take &= (zs == BACKGROUND) | (zs == IGNORE)
    return torch.where(take, pred, other).to(torch.uint8)


def _zero_shot_or_pred(pred: torch.Tensor, zs: torch.Tensor | None) -> torch.Tensor:
    return pred if zs is None else torch.where(zs != IGNORE, zs.to(pred.device), pred)


BACKGROUND = 0  # the background class index (VOC, COCO as UniMatch numbers it, the synthetic world)

FALLBACKS: dict[str, Callable[[torch.Tensor, torch.Tensor | None], torch.Tensor]] = {
    "zero_shot": _zero_shot_or_pred,
    "prediction": lambda pred, zs: pred,
    "ignore": lambda pred, zs: torch.full_like(pred, IGNORE),
}
