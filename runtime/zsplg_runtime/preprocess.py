"""Preprocessing and prediction of a deployed segmenter, as the deploy folder's sidecar says, in numpy.

The image path is the one ``zsplg-fast`` evaluates with (``train.transforms.normalize`` →
``train.evaluate.predict`` → argmax), written without torch: uint8 RGB → float32 / 255 → (x - mean) / std
(float32 arithmetic in the same order as torchvision's ``to_tensor`` + ``normalize``, so the network sees
the same bits) → NCHW. The size policy is the deploy's evaluation mode: ``original`` (the whole image at
its own size; ``center_crop`` deploys also run the whole image) or ``sliding_window`` (windows of
``window`` px at stride int(2/3·window), softmax averaged per pixel, as upstream UniMatch).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from zsplg_runtime.errors import FeedError, SidecarError

Logits = Callable[[np.ndarray], np.ndarray]  # (1, 3, h, w) float32 → (1, C, h, w) float32
MODES = ("original", "sliding_window")


@dataclass(frozen=True)
class Preprocessing:
    """What the sidecar says about feeding the model: ``mean``/``std`` per RGB channel applied to values
    scaled to 0..1, the size policy ``mode`` and its ``window`` (sliding window only)."""

    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    mode: str = "original"
    window: int = 321

    @classmethod
    def from_sidecar(cls, side: Mapping[str, Any], path: str | Path = "model.json") -> Preprocessing:
        """Read ``preprocessing`` (mean, std, scale) and ``deploy.miou`` (mode, window) of a deploy sidecar.

        Raises:
            SidecarError: no preprocessing block, a scale other than 0..1, or mean/std not 3 numbers.
        """
        pre = side.get("preprocessing")
        if not isinstance(pre, Mapping):
            raise SidecarError(path, "no 'preprocessing' (mean, std); deploy the model again")
        if pre.get("scale", "0..1") != "0..1":
            raise SidecarError(path, f"preprocessing scale {pre.get('scale')!r} is not '0..1'")
        try:
            mean = tuple(float(v) for v in pre["mean"])
            std = tuple(float(v) for v in pre["std"])
        except (KeyError, TypeError, ValueError) as e:
            raise SidecarError(path, f"preprocessing mean/std unreadable ({e!r}); deploy again") from e
        if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
            raise SidecarError(path, f"preprocessing mean {mean} / std {std}: need 3 values, std > 0")
        evaluated = side.get("deploy", {}).get("miou", {})
        mode = "original" if evaluated.get("mode") in (None, "center_crop") else str(evaluated["mode"])
        if mode not in MODES:
            raise SidecarError(path, f"deploy mode {mode!r} is not one of {', '.join(MODES)}")
        return cls(mean, std, mode, int(evaluated.get("window", 321)))  # type: ignore[arg-type]

    def to_input(self, image: np.ndarray) -> np.ndarray:
        """(H, W, 3) uint8 RGB → (1, 3, H, W) float32 normalised.

        Raises:
            FeedError: not an (H, W, 3) uint8 array.
        """
        if (
            not isinstance(image, np.ndarray)
            or image.ndim != 3
            or image.shape[2] != 3
            or image.dtype != np.uint8
        ):
            got = f"{getattr(image, 'dtype', type(image).__name__)} {tuple(getattr(image, 'shape', ()))}"
            raise FeedError("image", "(H, W, 3) uint8 RGB", got)
        x = image.transpose(2, 0, 1).astype(np.float32) / np.float32(255)
        mean = np.asarray(self.mean, dtype=np.float32)[:, None, None]
        std = np.asarray(self.std, dtype=np.float32)[:, None, None]
        return np.ascontiguousarray(((x - mean) / std)[None])


def softmax(logits: np.ndarray, axis: int = 1) -> np.ndarray:
    """Softmax over ``axis`` in float32 (max-subtracted)."""
    z = logits.astype(np.float32) - logits.max(axis=axis, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=axis, keepdims=True)


def _original(run: Logits, x: np.ndarray, window: int, num_classes: int) -> np.ndarray:
    return run(x)  # argmax of the logits = argmax of their softmax


def _sliding(run: Logits, x: np.ndarray, window: int, num_classes: int) -> np.ndarray:
    """Windows at stride int(2/3·window), edge windows clipped (as upstream); softmax averaged."""
    _, _, h, w = x.shape
    step = max(int(window * 2 / 3), 1)
    total = np.zeros((1, num_classes, h, w), dtype=np.float32)
    count = np.zeros((1, 1, h, w), dtype=np.float32)
    for row in range(0, h, step):
        for col in range(0, w, step):
            r1, c1 = min(h, row + window), min(w, col + window)
            total[:, :, row:r1, col:c1] += softmax(run(np.ascontiguousarray(x[:, :, row:r1, col:c1])))
            count[:, :, row:r1, col:c1] += 1
    return total / count


PREDICTORS: dict[str, Callable[[Logits, np.ndarray, int, int], np.ndarray]] = {
    "original": _original,
    "sliding_window": _sliding,
}


def predict_label(run: Logits, pre: Preprocessing, image: np.ndarray, num_classes: int) -> np.ndarray:
    """(H, W, 3) uint8 RGB → (H, W) uint8 class map (argmax over C) with ``run`` (input → logits).

    Raises:
        FeedError: a bad image array, or logits that are not (1, num_classes, H, W).
    """
    x = pre.to_input(image)

    def checked(t: np.ndarray) -> np.ndarray:
        out = np.asarray(run(t))
        want = (1, num_classes, t.shape[2], t.shape[3])
        if out.shape != want:
            raise FeedError("logits", f"shape {list(want)}", f"shape {list(out.shape)}")
        return out

    scores = PREDICTORS[pre.mode](checked, x, pre.window, num_classes)
    return scores.argmax(axis=1)[0].astype(np.uint8)
