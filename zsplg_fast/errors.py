"""Typed errors users see. Each renders as one line naming the file or key and what to do.

The CLI prints ``str(err)`` without a traceback unless ``--debug`` is given. The errors an edge runtime
can meet (inputs, sidecars, engines, output folders) live in :mod:`zsplg_runtime.errors` (the torch-free
distribution) and are re-exported here: one class each, so ``except`` clauses and ``isinstance`` checks
hold for errors raised by either package.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from zsplg_runtime.errors import (
    CheckpointError,
    ConfigError,
    DatasetError,
    EngineIncompatibleError,
    FeedError,
    InputImageError,
    LabelFormatError,
    MissingDependencyError,
    ModelFileError,
    OutputExistsError,
    OutputWriteError,
    ProviderFallbackError,
    SidecarError,
    ZsplgError,
)
from zsplg_runtime.integrity import ArtifactIntegrityError

__all__ = [
    "AccuracyDropError",
    "ArtifactIntegrityError",
    "CheckpointError",
    "ConfigError",
    "DatasetError",
    "EngineIncompatibleError",
    "ExportFailedError",
    "ExportValidationError",
    "FeedError",
    "InputImageError",
    "LabelFormatError",
    "MissingDependencyError",
    "ModelFileError",
    "OutputExistsError",
    "OutputWriteError",
    "ProviderFallbackError",
    "QdqLintError",
    "SampleError",
    "SidecarError",
    "TrainingError",
    "ZsplgError",
]


class SampleError(ZsplgError):
    """A sample met while training or evaluating is unusable (label values out of range, label size not the
    image's); names the label file. Raised inside DataLoader workers: torch's ``ExceptionWrapper.reraise``
    rebuilds an exception with ``message=<worker traceback>`` when its class has a ``message`` attribute,
    and this class keeps that traceback's last line (the original one-line error)."""

    message = "sample error"

    def __init__(self, path: str | Path = "", reason: str = "", message: str | None = None) -> None:
        if message is not None:
            lines = [ln for ln in message.splitlines() if ln.strip()]
            text = lines[-1].split(f"{type(self).__name__}: ", 1)[-1] if lines else message
            path, _, reason = text.partition(": ")
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


class ExportValidationError(ZsplgError):
    """An exported artifact drifts from PyTorch beyond its tolerance."""

    exit_code = 1

    def __init__(self, output: str, max_abs: float, cosine: float, tolerance: str) -> None:
        self.output = output
        self.max_abs = max_abs
        self.cosine = cosine
        self.tolerance = tolerance
        super().__init__(
            f"output '{output}' drifts from PyTorch: max abs {max_abs:.3g}, cosine {cosine:.6f}, "
            f"tolerance {tolerance}; the artifact was removed (use --allow-drift to keep it, recorded)"
        )


class TrainingError(ZsplgError):
    """Training cannot go on: a non-finite loss (naming the step and batch), an empty schedule."""

    exit_code = 1

    def __init__(self, where: str, reason: str) -> None:
        self.where = where
        self.reason = reason
        super().__init__(f"{where}: {reason}")


class ExportFailedError(ZsplgError):
    """The exporter (torch.onnx / TensorRT builder / ONNX parser) could not produce an artifact."""

    exit_code = 1

    def __init__(self, artifact: str, stage: str, reason: str, suggestion: str = "") -> None:
        self.artifact = artifact
        self.stage = stage
        self.reason = reason
        self.suggestion = suggestion
        tail = f"; {suggestion}" if suggestion else ""
        super().__init__(f"{artifact}: {stage} failed: {reason}{tail}")


class AccuracyDropError(ZsplgError):
    """A reduced-precision model loses more mIoU than allowed; nothing was written."""

    exit_code = 1

    def __init__(
        self, out: str | Path, precision: str, reference: float, deployed: float, limit: float
    ) -> None:
        self.out = str(out)
        self.precision = precision
        self.reference = reference
        self.deployed = deployed
        self.drop = reference - deployed
        self.limit = limit
        super().__init__(
            f"{self.out}: {precision} mIoU {deployed:.2f} vs fp32 {reference:.2f} drops "
            f"{self.drop:.2f} points, over the limit of {limit:.2f}; nothing was written "
            "(raise --max-miou-drop, calibrate on more images with --calib-images, "
            "or deploy --precision fp16 / fp32)"
        )


class QdqLintError(ExportFailedError):
    """A quantized (QDQ) ONNX graph holds nodes TensorRT cannot consume; lists each node and its rule."""

    def __init__(self, artifact: str | Path, problems: Sequence[tuple[str, str]]) -> None:
        self.problems = list(problems)
        shown = "; ".join(f"{node}: {why}" for node, why in self.problems[:8])
        more = f"; and {len(self.problems) - 8} more" if len(self.problems) > 8 else ""
        super().__init__(
            str(artifact),
            "QDQ lint for TensorRT",
            f"{len(self.problems)} node(s) TensorRT cannot consume: {shown}{more}",
            "quantize again with zsplg_fast.export.precision (int8: symmetric int8, QuantizeBias=False)",
        )
