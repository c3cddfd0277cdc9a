"""What ``label.precision: auto`` and ``label.compile: auto`` resolve to on this machine and job.

- precision ``auto``: bf16 autocast for the torch backend on CUDA (the fast path: the decoder's mask
  logits and IoU head stay fp32, toy AMG mean best IoU vs fp32 0.9856); exact fp32 everywhere else (CPUs,
  onnxruntime and TensorRT artifacts, whose precision is their file's).
- compile ``auto``: ``torch.compile`` the SAM engines and the fused AMG filter for the torch backend on
  CUDA when the job has at least :data:`COMPILE_MIN_IMAGES` images. The last GPU check measured the
  first compiled call at 6.6 s with Inductor's cache warm (33.7 s cold) against 0.12 s saved per image:
  a warm-cache compile repays itself after 6.6 / 0.12 = 55 images, a cold one after 33.7 / 0.12 = 281.
  Since the cache persists (:func:`persistent_inductor_cache`), only a machine's first compiled run pays
  the cold cost; at 100 images a warm run saves 12 s for 6.6 s spent (1.8x), and shorter jobs stay
  eager. ``on`` / ``off`` force it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch

from zsplg_fast.errors import ConfigError

COMPILE_MIN_IMAGES = 100
"""Images from which ``compile: auto`` compiles (see the module docstring for the arithmetic)."""
COMPILE_MODES = ("auto", "on", "off")


@dataclass(frozen=True)
class RunMode:
    """The precision and compile mode a label run uses, and why (for the manifest)."""

    precision: str
    compile: bool
    reason: str

    def describe(self) -> dict[str, object]:
        return {"precision": self.precision, "compile": self.compile, "reason": self.reason}


def resolve_run_mode(
    precision: str, compile_mode: str, device: torch.device, backend: str, n_images: int | None
) -> RunMode:
    """``label.precision`` / ``label.compile`` (``auto`` or explicit) → what runs.

    Args:
        precision: auto | fp32 | fp16 | bf16 | int8.
        compile_mode: auto | on | off.
        device: the labeling device; backend: torch | ort | trt (``upstream`` for the upstream masks).
        n_images: images this process will label (None: unknown, ``auto`` does not compile).
    """
    if compile_mode not in COMPILE_MODES:
        raise ConfigError(
            "label.compile", compile_mode, "unknown compile mode", valid=", ".join(COMPILE_MODES)
        )
    fast = device.type == "cuda" and backend == "torch"
    why = []
    if precision == "auto":
        bf16 = fast and torch.cuda.is_bf16_supported()
        precision = "bf16" if bf16 else "fp32"
        on = "torch on a bf16 GPU" if bf16 else "exact fp32: not the torch backend on a bf16 GPU"
        why.append(f"precision auto -> {precision} ({on})")
    if compile_mode == "auto":
        big = n_images is not None and n_images >= COMPILE_MIN_IMAGES
        compiled = fast and big
        size = "unknown" if n_images is None else str(n_images)
        why.append(f"compile auto -> {'on' if compiled else 'off'} ({size} images, min {COMPILE_MIN_IMAGES})")
    else:
        compiled = compile_mode == "on"
        if compiled and backend != "torch":
            raise ConfigError(
                "label.compile",
                "on",
                f"torch.compile applies to the torch backend, not {backend}",
                valid="auto, off",
            )
    return RunMode(precision, compiled, "; ".join(why) or "explicit")


def persistent_inductor_cache() -> Path:
    """Point Inductor's on-disk cache at a per-user folder that survives runs (unless the user set
    ``TORCHINDUCTOR_CACHE_DIR``), so a rerun loads compiled kernels instead of compiling again.
    Call before the first ``torch.compile``. Returns the folder."""
    if "TORCHINDUCTOR_CACHE_DIR" not in os.environ:
        base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(base / "zsplg-fast" / "inductor")
    os.environ.setdefault("TORCHINDUCTOR_FX_GRAPH_CACHE", "1")
    os.environ.setdefault("TORCHINDUCTOR_AUTOGRAD_CACHE", "1")
    path = Path(os.environ["TORCHINDUCTOR_CACHE_DIR"])
    path.mkdir(parents=True, exist_ok=True)
    return path
