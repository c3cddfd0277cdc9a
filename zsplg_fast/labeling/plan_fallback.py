"""A TensorRT plan made for another GPU or TensorRT (a Ray cluster mixes GPU models): rebuild it here from
the ONNX it was built from, else label on onnxruntime or torch with one warning line; never fail the job.

A plan is tied to the TensorRT version and the GPU's compute capability recorded in its sidecar
(:func:`zsplg_fast.engines.trt.check_compatible`). :func:`load_plan` rebuilds a refused plan with
:func:`zsplg_fast.export.tensorrt.build_engine` (same precision, same prompt-batch max) into
``<engines>/rebuilt/<gpu>-cc<cc>-trt<version>/`` beside it, so nodes with other GPUs never overwrite each
other's plans and a later run reuses the rebuilt one (``build_engine``'s cache key). The ONNX is the one
the sidecar names, or the file of that name beside the plan or in ``export/`` next to the engines folder.
When no rebuild is possible, :func:`fallback_backend` picks what labels instead.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

from zsplg_fast.engines.base import Engine, load_engine
from zsplg_fast.errors import EngineIncompatibleError

log = logging.getLogger(__name__)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.]+", "-", text).strip("-")


def source_onnx(plan: Path, side: dict[str, Any]) -> Path | None:
    """The ONNX ``plan`` was built from: the sidecar's path (as given at build time, or relative to
    the plan's folder), or that file name beside the plan or in ``../export``; None if none exists."""
    named = Path(str(side.get("onnx", {}).get("path", "")))
    if not named.name:
        return None
    for cand in (
        named,
        plan.parent / named,
        plan.parent / named.name,
        plan.parent.parent / "export" / named.name,
    ):
        if cand.is_file():
            return cand
    return None


def _prompt_max(side: dict[str, Any]) -> int | None:
    shapes = side.get("profiles", {}).get("point_coords")
    return int(shapes[2][0]) if shapes else None


def load_plan(path: str | Path, **options: Any) -> Engine:
    """``load_engine(path, "trt")``; a plan refused as built for another GPU / TensorRT is rebuilt here
    from its ONNX (see the module docstring) and the rebuilt plan is loaded.

    Raises:
        EngineIncompatibleError: refused and not rebuildable (no ONNX, or the build failed: the reason
            is in the message).
    """
    from zsplg_fast.export.artifact import read_sidecar

    plan = Path(path)
    try:
        return load_engine(plan, backend="trt", **options)
    except EngineIncompatibleError as refused:
        side = read_sidecar(plan)
        onnx = source_onnx(plan, side)
        if onnx is None:
            raise EngineIncompatibleError(
                plan, refused.built_with, refused.running_on, f"{refused.rebuild} (its ONNX is not here)"
            ) from refused
        try:
            from zsplg_fast.export.trt_info import runtime_info

            here = runtime_info()
            out = (
                plan.parent / "rebuilt" / _slug(f"{here.gpu}-cc{here.compute_capability}-trt{here.tensorrt}")
            )
            from zsplg_fast.export.tensorrt import build_engine

            art, reused = build_engine(
                onnx,
                out,
                precision=str(side.get("precision", "fp16")),
                timing_cache=None,
                decoder_max_batch=_prompt_max(side),
            )
        except Exception as e:  # any build failure: the caller falls back to another backend
            raise EngineIncompatibleError(
                plan,
                refused.built_with,
                refused.running_on,
                f"rebuilding here failed ({type(e).__name__}: {e})",
            ) from e
        if not reused:
            log.warning("%s: built for %s; rebuilt for this GPU as %s", plan, refused.built_with, art.path)
        return load_engine(art.path, backend="trt", **options)


SAM_DECODERS = (("sam_decoder_shared", "sam_decoder_image"), ("sam_decoder_batched",))
"""The SAM decoder sets, as ``labeling.engines.FAMILY_ARTIFACTS`` lists them (the default family)."""


def fallback_backend(
    precision: str,
    engines: Path,
    encoder: str = "sam_encoder",
    decoders: tuple[tuple[str, ...], ...] = SAM_DECODERS,
) -> tuple[str, Path | None] | None:
    """What labels when the plans in ``engines`` cannot run here: ``("ort", folder)`` when ``engines`` or
    ``engines/../export`` holds the ONNX artifacts of ``precision`` (fp32 or int8: ``encoder``,
    clip_dense, and every file of one of the ``decoders`` sets; the proposer family's names, e.g.
    ``sam2_encoder`` / ``sam2_decoder_batched`` for SAM 2), else ``("torch", None)`` (fp32 / fp16 /
    bf16); None for int8 without its ONNX."""
    suffix = ".int8.onnx" if precision == "int8" else ".onnx"

    def there(folder: Path, names: tuple[str, ...]) -> bool:
        return all((folder / f"{n}{suffix}").is_file() for n in names)

    for folder in (engines, engines.parent / "export"):
        if precision not in ("fp32", "int8") or not there(folder, (encoder, "clip_dense")):
            continue
        if any(there(folder, d) for d in decoders):
            return "ort", folder
    return None if precision == "int8" else ("torch", None)
