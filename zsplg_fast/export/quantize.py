"""``onnx-int8``: onnxruntime dynamic INT8 quantization of an exported artifact (CPU speed, opt-in).

Weights of MatMul/Gemm become per-channel QInt8, activations are quantized at run time
(``onnxruntime.quantization.quantize_dynamic``). Restricting to MatMul/Gemm keeps the residual
Add/Softmax/LayerNorm inputs in float, which is what costs accuracy (shared measurements:
ViT-B-16 image tower 2.3–2.9× faster than fp32 ORT at cosine 0.9999). Within MatMul/Gemm, each spec's
measured op list (:data:`zsplg_fast.export.int8_ops.INT8_OP_TYPES`) applies, as for static int8: the SAM /
SAM 2 decoders keep their two-way transformer's MatMuls float (quantizing them gave cosine 0.963 on the
SAM 2 decoder), and a spec with nothing to quantize (``sam_decoder_image``) gets its fp32 graph, recorded
with ``op_types: []``. No ``quant_pre_process``: it
fails on legacy exports. Fidelity against the fp32 artifact is measured and recorded, never hidden:
``export/<name>.int8.onnx`` + ``export/<name>.int8.json`` (``fidelity``: max abs, cosine per output).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from zsplg_runtime.integrity import file_records

from zsplg_fast.export.artifact import Artifact, data_path, files_sha256, now_iso, read_sidecar, sidecar_path
from zsplg_fast.export.int8_ops import int8_op_types
from zsplg_fast.export.parity import compare
from zsplg_fast.export.tensors import TensorSpec, Tolerance
from zsplg_fast.utils.io import atomic_write_json
from zsplg_fast.utils.outdir import refuse_foreign_file

INT8_OPS = ("MatMul", "Gemm")
FIDELITY_TOLERANCE = Tolerance(atol=float("inf"), rtol=0.0, min_cosine=0.99)


def int8_path(onnx_path: str | Path) -> Path:
    """``export/x.onnx`` → ``export/x.int8.onnx``."""
    p = Path(onnx_path)
    return p.with_name(f"{p.stem}.int8.onnx")


def _probe_feeds(
    inputs: list[TensorSpec], profiles: dict[str, list[int]], seed: int = 0
) -> dict[str, np.ndarray]:
    """Random feeds at each symbolic axis' profile 'opt' size (small, realistic)."""
    g = np.random.default_rng(seed)
    feeds = {}
    for s in inputs:
        shape = [d if isinstance(d, int) else int(profiles.get(d, [1, 2, 2])[1]) for d in s.shape]
        if s.dtype == "int64":  # token ids in [0, 8): valid in any vocabulary (the toy CLIP has 47)
            feeds[s.name] = g.integers(0, 8, size=shape).astype(np.int64)
        elif s.dtype == "uint8":
            feeds[s.name] = g.integers(0, 256, size=shape).astype(np.uint8)
        else:
            feeds[s.name] = g.standard_normal(shape).astype(np.float32)
    if "orig_im_size" in feeds:  # sam_decoder: a valid prompt and image size
        feeds["point_labels"] = np.ones_like(feeds["point_labels"])
        feeds["orig_im_size"] = np.array([480.0, 640.0], np.float32)
        feeds["has_mask_input"] = np.zeros(1, np.float32)
    return feeds


def _copy_model(src: Path, dst: Path) -> None:
    """The fp32 model (and its external data file, renamed for ``dst``) as ``dst``."""
    import onnx

    model = onnx.load(str(src))  # loads external data too
    external = data_path(src).exists()
    onnx.save(
        model, str(dst), save_as_external_data=external, location=data_path(dst).name if external else None
    )


def dynamic_op_types(spec: str | None) -> list[str]:
    """The op types ``onnx-int8`` quantizes for a spec: its int8 op list within MatMul/Gemm."""
    return [t for t in int8_op_types(spec) if t in INT8_OPS]


def quantize_artifact(onnx_path: str | Path, force: bool = False) -> Artifact:
    """Write ``<name>.int8.onnx`` (+ sidecar with fidelity vs the fp32 artifact) beside ``onnx_path``."""
    import onnxruntime as ort
    from onnxruntime.quantization import QuantType, quantize_dynamic

    src = Path(onnx_path)
    side = read_sidecar(src)
    op_types = dynamic_op_types(side.get("spec"))
    dst = int8_path(src)
    refuse_foreign_file((dst, data_path(dst), sidecar_path(dst)), sidecar_path(dst), force)
    t0 = time.perf_counter()
    tmpdir = Path(tempfile.mkdtemp(prefix=f".{dst.stem}.", suffix=".partial", dir=src.parent))
    try:
        tmp = tmpdir / dst.name
        if op_types:
            quantize_dynamic(
                src,
                tmp,
                op_types_to_quantize=op_types,
                per_channel=True,
                weight_type=QuantType.QInt8,
                use_external_data_format=side.get("external_data") is not None,
            )
        else:  # quantize_dynamic reads [] as "every op type": the int8 artifact is the fp32 graph
            _copy_model(src, tmp)
        inputs = [TensorSpec.from_dict(d) for d in side["inputs"]]
        feeds = _probe_feeds(inputs, side.get("profiles", {}))
        names = [d["name"] for d in side["outputs"]]
        ref = ort.InferenceSession(str(src), providers=["CPUExecutionProvider"]).run(names, feeds)
        got = ort.InferenceSession(str(tmp), providers=["CPUExecutionProvider"]).run(names, feeds)
        fidelity = [
            compare(n, r, g, FIDELITY_TOLERANCE).to_dict() for n, r, g in zip(names, ref, got, strict=True)
        ]
        files = [tmp, *([data_path(tmp)] if data_path(tmp).exists() else [])]
        record: dict[str, Any] = {
            **{k: v for k, v in side.items() if k not in ("validation", "sha256", "size_bytes", "file")},
            "kind": "onnx-int8",
            "name": f"{side['name']}.int8",
            "file": dst.name,
            "precision": "int8",
            "quantization": {
                "method": "onnxruntime.quantization.quantize_dynamic",
                "op_types": op_types,
                "per_channel": True,
                "weight_type": "QInt8",
                "from": {"file": src.name, "sha256": side.get("sha256")},
            },
            "fidelity": {"vs": "fp32 artifact, onnxruntime CPU", "outputs": fidelity},
            "sha256": files_sha256(files),
            "files": file_records(files, [dst.name, data_path(dst).name][: len(files)]),
            "size_bytes": sum(f.stat().st_size for f in files),
            "quantize_time_s": round(time.perf_counter() - t0, 2),
            "created": now_iso(),
        }
        if len(files) > 1:
            os.replace(files[1], data_path(dst))
        os.replace(tmp, dst)
        atomic_write_json(sidecar_path(dst), record)
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)
    return Artifact(dst, record)
