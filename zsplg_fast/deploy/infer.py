"""``zsplg-fast infer``: run a deploy folder on an image or a folder of images.

The loop, the output rules and the ``ort`` backend are the torch-free runtime's
(:func:`zsplg_runtime.infer.infer`, the code ``zsplg-runtime infer`` runs on an edge device): one
implementation. This module adds the backends that need the full package: ``torch`` (the fp32
checkpoint the folder was made from) and ``trt`` (a plan built here with ``zsplg-fast build``'s code, in
``out/engines``). Those predict with :func:`zsplg_fast.bench.segmenter.predict_label`, the code evaluation
scores; the runtime's numpy path gives the same labels (tests/deploy/test_runtime_parity.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from zsplg_runtime.infer import (
    COMMAND,
    LEGACY,
    MODEL,
    OPENERS,
    Opener,
    Predictor,
    Progress,
    check_size,
    describe_sizes,
)
from zsplg_runtime.infer import infer as run_infer
from zsplg_runtime.outdir import claim_output

__all__ = ["ENGINES", "check_size", "describe_sizes", "infer"]


class EnginePredictor:
    """A torch-side Engine (torch module, TensorRT plan) as the runtime loop's Predictor, predicting
    as evaluation does (:func:`zsplg_fast.bench.segmenter.predict_label`)."""

    def __init__(self, engine: Any, side: dict[str, Any], sidecar: Path | None = None) -> None:
        """``sidecar``: the file ``side`` was read from (named when its class names do not match the
        logits' channels: SidecarError)."""
        from zsplg_runtime.preprocess import Preprocessing
        from zsplg_runtime.segmenter import class_count

        from zsplg_fast.bench.segmenter import EngineSegmenter

        self.model = EngineSegmenter(
            engine, class_count(side, sidecar or Path(MODEL).with_suffix(".json"), engine)
        )
        pre = Preprocessing.from_sidecar(side)
        self.mode, self.window = pre.mode, pre.window
        self.device = str(getattr(engine, "device", "cpu"))
        self.sizes = (getattr(engine, "profiles", None) or {}).get("image")

    def predict(self, image: np.ndarray) -> np.ndarray:
        from zsplg_fast.bench.segmenter import predict_label

        return predict_label(self.model, image, self.mode, self.window)


def _torch(d: Path, side: dict[str, Any], out: Path, threads: int | None) -> Predictor:
    """The fp32 PyTorch module rebuilt from the sidecar's source checkpoint (which must still exist)."""
    from zsplg_fast.engines import load_engine

    return EnginePredictor(load_engine(d / MODEL, backend="torch"), side, d / "model.json")


def _trt(d: Path, side: dict[str, Any], out: Path, threads: int | None) -> Predictor:
    """A TensorRT plan of ``model.onnx`` at the deployed precision, built or reused in ``out/engines``."""
    from zsplg_fast.engines import load_engine
    from zsplg_fast.export.tensorrt import build_engine

    claim_output(out, COMMAND, legacy=LEGACY)  # the plan is built inside ``out``
    engines = out / "engines"
    artifact, _ = build_engine(
        d / MODEL, engines, precision=str(side["precision"]), timing_cache=engines / "timing.cache"
    )
    return EnginePredictor(load_engine(artifact.path, backend="trt"), side, d / "model.json")


ENGINES: dict[str, Opener] = {"ort": OPENERS["ort"], "torch": _torch, "trt": _trt}


def infer(
    deploy_dir: str | Path,
    inputs: str | Path,
    out: str | Path,
    backend: str = "ort",
    overlays: bool = False,
    alpha: float = 0.5,
    threads: int | None = None,
    force: bool = False,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """:func:`zsplg_runtime.infer.infer` with the backends of :data:`ENGINES` (``ort``, ``trt``, ``torch``).

    Returns the report (``images``, ``written``, ``resumed``, ``failed``, ``backend``, ``seconds``, …).
    Raises: as :func:`zsplg_runtime.infer.infer`.
    """
    return run_infer(deploy_dir, inputs, out, backend, overlays, alpha, threads, force, progress, ENGINES)
