"""What every derived precision ONNX shares, whatever made it (:mod:`.precision`): its sidecar (the fp32
artifact's, with the derived file's precision, checksums and ``derived_from``), its validation against
the fp32 graph on onnxruntime CPU, the probe feeds of that validation, and the reuse-or-refuse rule for
an existing ``<name>.<precision>.onnx``.
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from zsplg_fast.errors import OutputExistsError
from zsplg_fast.export.artifact import Artifact, files_sha256, read_sidecar, sidecar_path

ORT_CPU_OPTIMIZATION = {"fp32": "all", "int8": "all", "fp16": "extended", "bf16": "extended"}
"""onnxruntime CPU graph optimisation level per precision (fp16/bf16: ``extended``, see precision.py)."""


def write_derived_sidecar(
    src_onnx: str | Path, dst_onnx: str | Path, precision: str, extra: Mapping[str, Any]
) -> dict[str, Any]:
    """Write ``dst_onnx``'s sidecar: the fp32 artifact's (IO, profiles, preprocessing, classes, source)
    with file, precision, sha256, size and ``extra`` (e.g. ``{"quantization": ...}``) of the derived model.

    The ``validation`` figures of the fp32 export are kept under ``derived_from`` (they describe the
    fp32 graph, not this one). Returns the record.
    """
    from zsplg_runtime.integrity import file_records

    from zsplg_fast.export.artifact import data_path, now_iso
    from zsplg_fast.utils.io import atomic_write_json

    src, dst = Path(src_onnx), Path(dst_onnx)
    side = read_sidecar(src)
    files = [dst, *([data_path(dst)] if data_path(dst).is_file() else [])]
    record: dict[str, Any] = {
        **{k: v for k, v in side.items() if k not in ("validation", "sha256", "size_bytes", "file")},
        "kind": f"onnx-{precision}",
        "name": f"{side.get('name', src.stem)}.{precision}",
        "file": dst.name,
        "external_data": files[1].name if len(files) > 1 else None,
        "precision": precision,
        **dict(extra),
        "derived_from": {
            "file": src.name,
            "sha256": side.get("sha256"),
            "validation": side.get("validation"),
        },
        "sha256": files_sha256(files),
        "files": file_records(files),  # checked at every load (zsplg_runtime.integrity)
        "size_bytes": sum(f.stat().st_size for f in files),
        "created": now_iso(),
    }
    atomic_write_json(sidecar_path(dst), record)
    return record


def validate_derived(
    src: Path, dst: Path, precision: str, feeds: list[dict[str, np.ndarray]], level: str | None = None
) -> dict[str, Any]:
    """Cosine / max abs of every output of ``dst`` against the fp32 ``src``, onnxruntime CPU, worst
    over ``feeds``; bf16 is recorded as skipped where onnxruntime's CPU provider lacks its kernels."""
    import onnxruntime as ort
    from zsplg_runtime.ort import OrtSession

    from zsplg_fast.export.parity import compare
    from zsplg_fast.export.quantize import FIDELITY_TOLERANCE

    # no CPU memory arena: its power-of-two growth on vit_b's attention buffers runs hosts out of memory
    opts = {"enable_cpu_mem_arena": False}
    ref = OrtSession(src, optimization="all", session_options=opts)
    try:
        got = OrtSession(dst, optimization=level or ORT_CPU_OPTIMIZATION[precision], session_options=opts)
    except (ort.capi.onnxruntime_pybind11_state.NotImplemented, RuntimeError) as e:
        return {"skipped": f"onnxruntime CPU cannot run {precision}: {str(e).strip()[:200]}"}
    worst: dict[str, dict[str, Any]] = {}
    for f in feeds:
        r, g = ref(f), got(f)
        for name in r:
            c = compare(name, np.asarray(r[name]), np.asarray(g[name]), FIDELITY_TOLERANCE).to_dict()
            w = worst.get(name)
            if w is None or c["cosine"] < w["cosine"]:
                worst[name] = {**c, "max_abs": max(c["max_abs"], (w or c)["max_abs"])}
            else:
                w["max_abs"] = max(w["max_abs"], c["max_abs"])
    return {
        "vs": "fp32 ONNX, onnxruntime CPU",
        "feeds": len(feeds),
        "outputs": list(worst.values()),
        "worst_cosine": min(o["cosine"] for o in worst.values()),
        "worst_max_abs": max(o["max_abs"] for o in worst.values()),
    }


def probe_feeds(art: Artifact, seed: int = 0) -> dict[str, np.ndarray]:
    """Seeded random feeds at each symbolic axis' profile 'opt' size: float32 N(0, 1), int64 token ids
    in [0, 8) (valid in any vocabulary); a SAM decoder gets a valid prompt and image size."""
    from zsplg_fast.export.quantize import _probe_feeds

    feeds = _probe_feeds(art.inputs, art.sidecar.get("profiles", {}), seed)
    g = np.random.default_rng(seed)
    for k, v in feeds.items():
        if v.dtype == np.int64:
            feeds[k] = g.integers(0, 8, size=v.shape).astype(np.int64)
    return feeds


def reuse_derived(
    dst: Path, src_sha: str, tool: str, settings: dict[str, Any], force: bool
) -> Artifact | None:
    """The existing derived artifact when made from the same source by the same tool with the same
    ``settings`` (a subset of its ``precision_settings``); else refuse (``force`` replaces it)."""
    if not dst.exists() and not sidecar_path(dst).exists():
        return None
    side = read_sidecar(dst) if sidecar_path(dst).is_file() else {}
    made = side.get("precision_settings", {})
    same_src = side.get("precision_source_sha256") == src_sha and side.get("precision_tool") == tool
    same = same_src and all(made.get(k) == v for k, v in settings.items())
    if same and dst.is_file() and not force:
        return Artifact(dst, side)
    if not force:
        why = (
            f"made with other settings ({ {k: made.get(k) for k in settings} })"
            if same_src
            else f"made by {side.get('precision_tool') or side.get('kind') or 'unknown'} from another "
            f"source (sha256 {str(side.get('precision_source_sha256'))[:12]})"
        )
        raise OutputExistsError(dst, f"exists, {why}; pass force=True (--force) to replace it")
    return None


def copy_unquantized(src: Path, dst: Path, batches: int) -> dict[str, Any]:
    """The int8 artifact of a spec with no op to quantize: the fp32 graph as is (+ its data file)."""
    from zsplg_fast.export.artifact import data_path

    shutil.copyfile(src, dst)
    if data_path(src).is_file():
        shutil.copyfile(data_path(src), data_path(dst))
    return {
        "method": "none (no quantizable op in this spec)",
        "op_types": [],
        "qdq_nodes": 0,
        "calibration_batches": batches,
    }
