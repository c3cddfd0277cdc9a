"""Typed errors users see. Each renders as one line naming the file or key and what to do.

The CLI prints ``str(err)`` without a traceback unless ``--debug`` is given.
"""

from __future__ import annotations

import errno as _errno
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

# re-exported: a ValueError with exit_code 2 from a stdlib-only module (the torch-free runtime can carry
# it), caught by the CLI beside ZsplgError
from zsplg_fast.utils.integrity import ArtifactIntegrityError as ArtifactIntegrityError


class ZsplgError(Exception):
    """Base class of every error the CLI prints without a traceback.

    ``exit_code`` is the CLI's exit status: 2 for usage, config and input errors (the default), 1 for a
    failure that stopped a job that had started (see the README's "Exit codes").
    """

    exit_code: int = 2


class InputImageError(ZsplgError):
    """An input image cannot be used (missing, empty, truncated, unsupported mode, too large)."""

    def __init__(self, path: str | Path, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


class LabelFormatError(ZsplgError):
    """A label file is not a valid single-channel class-index map."""

    def __init__(self, path: str | Path, reason: str, values: Sequence[int] | None = None) -> None:
        self.path = str(path)
        self.reason = reason
        self.values = list(values) if values is not None else None
        extra = f" (offending values: {self.values[:20]})" if self.values else ""
        super().__init__(f"{self.path}: {reason}{extra}")


class DatasetError(ZsplgError):
    """A dataset folder, split file or annotation file is malformed."""

    def __init__(self, path: str | Path, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


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


class ConfigError(ZsplgError):
    """A config key or value is invalid."""

    def __init__(
        self,
        key: str,
        value: Any,
        reason: str,
        valid: str | None = None,
        suggestion: str | None = None,
    ) -> None:
        self.key = key
        self.value = value
        self.valid = valid
        self.suggestion = suggestion
        msg = f"config key '{key}' = {value!r}: {reason}"
        if valid:
            msg += f"; valid: {valid}"
        if suggestion:
            msg += f"; did you mean '{suggestion}'?"
        super().__init__(msg)


class CheckpointError(ZsplgError):
    """A checkpoint file is missing, unreadable, or of the wrong architecture."""

    def __init__(self, path: str | Path, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


class ModelFileError(CheckpointError):
    """A model file (ONNX, plan, checkpoint) is corrupt, truncated or unsafe; says how to make it again."""

    def __init__(self, path: str | Path, reason: str, fix: str) -> None:
        self.fix = fix
        super().__init__(path, f"{reason}; {fix}")


class SidecarError(CheckpointError):
    """A sidecar cannot be used as read (written by a newer zsplg-fast)."""


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


class EngineIncompatibleError(ZsplgError):
    """A built engine does not match the runtime (library version or GPU)."""

    def __init__(self, path: str | Path, built_with: str, running_on: str, rebuild: str) -> None:
        self.path = str(path)
        self.built_with = built_with
        self.running_on = running_on
        self.rebuild = rebuild
        super().__init__(
            f"{self.path}: built with {built_with}, running on {running_on}; rebuild with: {rebuild}"
        )


class FeedError(ZsplgError):
    """An engine input does not match what the artifact expects."""

    def __init__(self, name: str, expected: str, got: str) -> None:
        self.name = name
        self.expected = expected
        self.got = got
        super().__init__(f"input '{name}': expected {expected}, got {got}")


class MissingDependencyError(ZsplgError):
    """An optional library (TensorRT, onnxruntime-gpu, ray) is not installed."""

    def __init__(self, package: str, feature: str, install: str) -> None:
        self.package = package
        self.feature = feature
        self.install = install
        super().__init__(f"{feature} needs the '{package}' package, which is not installed; {install}")


class OutputExistsError(ZsplgError):
    """Refusing to write over a user's file, or to reuse an output folder made with another config."""

    def __init__(self, path: str | Path, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


class OutputWriteError(ZsplgError, OSError):
    """A file or folder cannot be written: permission denied, disk full, read-only filesystem, a path
    that is a file. Still an ``OSError`` (``errno`` kept), so ``except OSError`` keeps catching it."""

    exit_code = 1

    def __init__(self, path: str | Path, errno: int, detail: str = "") -> None:
        OSError.__init__(self, errno, os.strerror(errno), str(path))
        self.path = str(path)
        self.detail = detail

    @classmethod
    def from_os(cls, path: str | Path, err: OSError, detail: str = "") -> OutputWriteError:
        """Wrap ``err`` (its errno; EIO when it has none) as a write error on ``path``."""
        if isinstance(err, OutputWriteError):
            return err
        return cls(path, err.errno or _errno.EIO, detail)

    def __str__(self) -> str:
        tail = f"; {self.detail}" if self.detail else ""
        return f"{self.path}: cannot write: {self.strerror} [errno {self.errno}]{tail}"

    def __reduce__(self) -> tuple[Any, ...]:  # picklable across processes (Ray, torchrun)
        return (type(self), (self.path, self.errno, self.detail))


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


class ProviderFallbackError(ZsplgError):
    """onnxruntime silently fell back to another execution provider than the one asked for."""

    def __init__(self, path: str | Path, asked: str, got: Sequence[str], hint: str) -> None:
        self.path = str(path)
        self.asked = asked
        self.got = list(got)
        self.hint = hint
        super().__init__(
            f"{self.path}: asked for {asked}, but onnxruntime runs on {', '.join(self.got)}; {hint}"
        )


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
