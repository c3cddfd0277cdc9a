"""Typed errors of the runtime (and of zsplg-fast, which re-exports them from ``zsplg_fast.errors``).

Each renders as one line naming the file or key and what to do; the CLIs (``zsplg-runtime`` and
``zsplg-fast``) print ``str(err)`` without a traceback unless ``--debug`` is given, and exit with
``err.exit_code``.
"""

from __future__ import annotations

import errno as _errno
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any


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
