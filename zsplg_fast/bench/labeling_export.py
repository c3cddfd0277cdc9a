"""The benchmarks' ONNX artifacts: export (validated, reused when they still reproduce the model) and
their INT8 copies. Variants C and D run them (``labeling_pipelines.ort_engines``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from zsplg_fast.bench.labeling_pipelines import BENCH_SPECS, Models, clip_options


def _artifact_matches(path: Path, prepared: Any) -> bool:
    """An existing artifact of the same spec options (e.g. ``folded``: the same function, another graph)
    reproduces ``prepared.module`` on its dummy feeds (cosine ≥ 0.99999)."""
    from zsplg_fast.engines.ort import OrtEngine
    from zsplg_fast.export.artifact import read_sidecar, sidecar_path

    if not path.is_file() or not sidecar_path(path).is_file():
        return False
    if read_sidecar(path).get("spec_options") != json.loads(json.dumps(prepared.options)):
        return False
    feeds = {k: v.numpy() for k, v in prepared.dummy.items()}
    with torch.inference_mode():
        ref = prepared.module(**prepared.dummy)
    ref = ref if isinstance(ref, (tuple, list)) else (ref,)
    got = OrtEngine(path)(feeds)
    for spec, r in zip(prepared.outputs, ref, strict=True):
        g = torch.as_tensor(got[spec.name]).flatten().double()
        if g.shape != r.flatten().shape:
            return False
        if float(torch.nn.functional.cosine_similarity(g, r.flatten().double(), dim=0)) < 0.99999:
            return False
    return True


def export_engines(
    models: Models,
    out_dir: str | Path,
    int8: bool = False,
    reuse: bool = True,
    exporter: str | None = None,
    folded: bool = False,
) -> dict[str, Path]:
    """Export the four artifacts to ``out_dir`` (ONNX + sidecars, validated); with ``int8`` also their
    ``quantize_dynamic`` variants. With ``reuse``, an artifact already there that reproduces the
    model's outputs on the spec's dummy feeds is kept; ``exporter`` overrides the SAM specs' preferred one;
    ``folded``: the AMG decoder in ``decoder_attention: folded`` form (export/specs/folded.py).
    Returns name → path (``<name>.int8`` for INT8)."""
    from zsplg_fast.export.onnx import export_onnx
    from zsplg_fast.export.quantize import int8_path, quantize_artifact
    from zsplg_fast.export.specs import get_spec

    out = Path(out_dir)
    paths: dict[str, Path] = {}
    names = BENCH_SPECS[models.family]
    jobs = (
        (names.encoder, models.sam, {"validation_batches": (1,)}),
        *(((names.decoder_image, models.sam, {}),) if names.decoder_image else ()),
        (names.decoder, models.sam, {"folded": folded}),
        ("clip_dense", models.clip, clip_options(models)),
    )
    for name, model, opts in jobs:
        p = get_spec(name).bind(model, **opts)
        path = out / f"{name}.onnx"
        fresh = not (reuse and _artifact_matches(path, p))
        if fresh:
            src = {"weights": "random-init"}
            how = exporter if model is models.sam else None  # clip_dense needs dynamo (antialiased resize)
            path = Path(export_onnx(p, out, force=True, source=src, exporter=how).path)
        paths[name] = path
        if int8:
            q = int8_path(path)
            paths[f"{name}.int8"] = (
                q if q.is_file() and not fresh else Path(quantize_artifact(path, force=True).path)
            )
    return paths
