"""Sticky device errors: after these the CUDA context of the process is unusable, so every later image
would fail too. The label job stops at the first one (``DeviceLostError``) instead of counting failures.

CUDA leaves a context corrupted after a kernel fault or a hardware error; every later CUDA call in that
process returns the same error (CUDA Runtime API, "Error Handling": "sticky" errors such as
``cudaErrorIllegalAddress``, ``cudaErrorLaunchFailure``, ``cudaErrorECCUncorrectable``). The texts are
those of ``cudaGetErrorString`` / ``cuGetErrorName``, which torch (``CUDA error: <text>``), onnxruntime
(``CUDA failure 700: <text>``) and TensorRT's log all quote. Out of memory is not sticky (see
``labeler.is_out_of_memory``).
"""

from __future__ import annotations

STICKY_MARKERS = (
    "an illegal memory access was encountered",  # cudaErrorIllegalAddress (700)
    "cuda_error_illegal_address",
    "illegal memory access",
    "uncorrectable ecc error encountered",  # cudaErrorECCUncorrectable (214)
    "cuda_error_ecc_uncorrectable",
    "ecc error",
    "unspecified launch failure",  # cudaErrorLaunchFailure (719)
    "cuda_error_launch_failed",
    "misaligned address",  # cudaErrorMisalignedAddress (716)
    "an illegal instruction was encountered",  # cudaErrorIllegalInstruction (715)
    "hardware stack error",  # cudaErrorHardwareStackError (714)
    "device-side assert triggered",  # cudaErrorAssert (710)
    "unrecoverable error",  # NVML / XID: the GPU fell off the bus
    "gpu has fallen off the bus",
)


def is_sticky_device_error(err: BaseException) -> bool:
    """True when ``err`` (any backend) reports a CUDA error that poisons the process's context."""
    text = str(err).lower()
    return any(m in text for m in STICKY_MARKERS)


def first_line(err: BaseException) -> str:
    """``Type: first line of the message`` (CUDA errors carry multi-line debugging hints)."""
    lines = str(err).strip().splitlines()
    return f"{type(err).__name__}: {lines[0]}" if lines else type(err).__name__
