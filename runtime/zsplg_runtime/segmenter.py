"""``Segmenter.load(deploy_dir).predict(image) -> (H, W) uint8``: a deploy folder on onnxruntime or TensorRT.

A deploy folder (``zsplg-fast deploy``) holds ``model.onnx`` and its sidecar ``model.json`` (class names,
palette, preprocessing, precision, the versions it was made with). On the target, ``build_tensorrt.sh``
(``zsplg-fast build`` or ``trtexec``) writes ``model.<precision>.plan``; the folder already carries its
sidecar ``model.<precision>.json``, which :class:`~zsplg_runtime.trt.TrtSession` reads.

Backends are a table (:data:`BACKENDS`): name → opener of the session for a deploy folder.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from zsplg_runtime.errors import CheckpointError, ConfigError, InputImageError, SidecarError
from zsplg_runtime.images import load_image
from zsplg_runtime.preprocess import Preprocessing, predict_label
from zsplg_runtime.sidecar import open_artifact
from zsplg_runtime.viz import full_palette

MODEL = "model.onnx"


def plan_name(precision: str) -> str:
    """The plan file of a deploy folder: ``model.<precision>.plan`` (the trtexec line's --saveEngine)."""
    return f"model.{precision}.plan"


def _ort(d: Path, side: dict[str, Any], threads: int | None, device: int) -> Any:
    from zsplg_runtime.ort import OrtSession

    return OrtSession(d / MODEL, intra_op_threads=threads)


def find_plan(d: Path, precision: str) -> Path:
    """The deploy folder's plan: ``model.<precision>.plan`` (trtexec, ``build_tensorrt.sh``), else the one
    ``engines/*.<precision>.plan`` that ``zsplg-fast build`` wrote there.

    Raises:
        CheckpointError: no plan (or several in ``engines/``), saying how to build it.
    """
    plan = d / plan_name(precision)
    if plan.is_file():
        return plan
    built = sorted((d / "engines").glob(f"*.{precision}.plan")) if (d / "engines").is_dir() else []
    if len(built) == 1:
        return built[0]
    what = f"several plans in engines/ ({', '.join(p.name for p in built)})" if built else "no TensorRT plan"
    raise CheckpointError(plan, f"{what}; build it on this device: bash {d / 'build_tensorrt.sh'}")


def _trt(d: Path, side: dict[str, Any], threads: int | None, device: int) -> Any:
    from zsplg_runtime.trt import TrtSession

    return TrtSession(find_plan(d, str(side.get("precision", "fp32"))), device=device)


BACKENDS: dict[str, Callable[[Path, dict[str, Any], int | None, int], Any]] = {"ort": _ort, "trt": _trt}


def class_count(side: Mapping[str, Any], path: str | Path, engine: Any = None) -> int:
    """C: the number of class names, which must match the logits' (B, C, H, W) channels that the sidecar
    and (onnxruntime) the graph itself declare (the sidecar's types are checked on read); the logits' C
    when the sidecar names no classes.

    Raises:
        SidecarError: the names' count differs from the logits' channels (every image would fail), or
            there are no names and no (B, C, H, W) first output to count them from.
    """
    names = side.get("class_names") or []
    declared = [(side.get("outputs") or [{}])[0].get("shape", [])]
    session = getattr(engine, "session", None)
    if session is not None:  # onnxruntime: what the graph says
        declared.append(list(session.get_outputs()[0].shape))
    counts = {s[1] for s in declared if len(s) == 4 and isinstance(s[1], int) and s[1] >= 1}
    if names and counts - {len(names)}:
        raise SidecarError(
            path,
            f"{len(names)} class names, but the model's logits have {sorted(counts)} channels; deploy again",
        )
    if not names and len(counts) != 1:
        raise SidecarError(
            path, "has no 'class_names' and its first output is not (B, C, H, W) logits; deploy again"
        )
    return len(names) or counts.pop()


class Segmenter:
    """A deployed segmenter: an engine (``engine({"image": x}) -> {"logits": ...}``) and its sidecar.

    Attributes:
        class_names: C names; ``palette``: (256, 3) uint8; ``precision``: fp32 / fp16 / int8;
        ``preprocessing``: mean, std, size policy; ``sizes``: the (min, opt, max) ``image`` shapes a
        TensorRT plan covers, None for any size.
    """

    def __init__(self, engine: Any, sidecar: dict[str, Any], path: str | Path = MODEL) -> None:
        self.engine = engine
        self.sidecar = sidecar
        self.class_names = [str(n) for n in sidecar.get("class_names") or []]
        self.num_classes = class_count(sidecar, path, engine)
        self.palette = full_palette(sidecar.get("palette"))
        self.precision = str(sidecar.get("precision", "fp32"))
        self.preprocessing = Preprocessing.from_sidecar(sidecar, path)
        self.device = str(getattr(engine, "device", "cpu"))
        self.sizes = (getattr(engine, "profiles", None) or {}).get("image")
        self.mode = self.preprocessing.mode

    @classmethod
    def load(
        cls, deploy_dir: str | Path, backend: str = "ort", threads: int | None = None, device: int = 0
    ) -> Segmenter:
        """Open ``deploy_dir`` with ``backend`` (``ort``: model.onnx on onnxruntime CPU; ``trt``: the
        plan built on this device, ``model.<precision>.plan``).

        Raises:
            ConfigError: unknown backend. CheckpointError / SidecarError: a missing or unreadable sidecar
            or model. MissingDependencyError: the backend's library is not installed.
        """
        if backend not in BACKENDS:
            raise ConfigError("infer.backend", backend, "unknown backend", valid=", ".join(BACKENDS))
        d = Path(deploy_dir)
        side = open_artifact(d / MODEL)  # sidecar checks + size/sha256 of model.onnx
        return cls(BACKENDS[backend](d, side, threads, device), side, d / "model.json")

    def logits(self, x: np.ndarray) -> np.ndarray:
        """(1, 3, h, w) float32 normalised → (1, C, h, w) float32 logits."""
        return np.asarray(self.engine({"image": x})["logits"], dtype=np.float32)

    def predict(self, image: np.ndarray | str | Path) -> np.ndarray:
        """An (H, W, 3) uint8 RGB array, or an image file → (H, W) uint8 class map.

        Raises:
            InputImageError: an image file that cannot be used. FeedError: a bad array, or a size the
            TensorRT plan does not cover.
        """
        if isinstance(image, str | Path):
            image = load_image(image)
        if not isinstance(image, np.ndarray):
            raise InputImageError(str(type(image).__name__), "give an (H, W, 3) uint8 array or a file path")
        return predict_label(self.logits, self.preprocessing, image, self.num_classes)
