"""Export one bound spec to ONNX, check it, validate it against PyTorch, and write it with its sidecar.

Steps (follows the structure of segment-anything ``scripts/export_onnx_model.py`` and optimum's
``exporters.onnx.convert.export`` + ``validate_model_outputs``, written anew):

1. ``torch.onnx.export`` with the spec's exporter (``dynamo`` with ``dynamic_shapes`` built from the
   symbolic axes, or ``legacy`` with ``dynamic_axes``), opset ≥ 17 (dynamo writes ≥ 18), into a
   private temp folder beside the destination;
2. input/output dims named as the spec declares, ``onnx.checker`` and shape inference (path-based,
   so > 2 GB models with external data work);
3. every output compared with PyTorch in onnxruntime (CPU) on the validation inputs, which differ
   from the export inputs in every dynamic axis: drift beyond tolerance raises
   ``ExportValidationError`` and nothing is left behind (``allow_drift`` keeps it, recorded);
4. atomic moves into place (external data, model), then the sidecar, last.
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from zsplg_runtime.integrity import file_records, remember_records

from zsplg_fast.errors import ConfigError, ExportFailedError, ExportValidationError
from zsplg_fast.export.artifact import (
    SIDECAR_VERSION,
    Artifact,
    data_path,
    files_sha256,
    host,
    library_versions,
    now_iso,
    sidecar_path,
)
from zsplg_fast.export.parity import Parity, compare, worst
from zsplg_fast.export.specs.base import EXPORTERS, Prepared
from zsplg_fast.export.tensors import TensorSpec
from zsplg_fast.utils.io import atomic_write_json
from zsplg_fast.utils.outdir import refuse_foreign_file

EXTERNAL_DATA_BYTES = 1_800_000_000  # protobuf's hard limit is 2 GiB; keep a margin for the graph
MIN_OPSET = 17

ExportFn = Callable[[Prepared, Path, int, bool], None]


@contextlib.contextmanager
def _quiet() -> Iterator[io.StringIO]:
    """Silence exporter chatter (progress prints, TracerWarnings) but keep it for error messages."""
    buf = io.StringIO()
    with warnings.catch_warnings(), contextlib.redirect_stdout(buf):
        warnings.simplefilter("ignore")
        yield buf


def _args(p: Prepared) -> tuple[torch.Tensor, ...]:
    return tuple(p.dummy[s.name] for s in p.inputs)


def _export_dynamo(p: Prepared, path: Path, opset: int, external: bool) -> None:
    """torch.export-based exporter with ``dynamic_shapes`` (named Dims shared across inputs)."""
    from torch.export import Dim

    dims: dict[str, Any] = {}
    for s in p.inputs:
        for name in s.symbolic_axes.values():
            lo, hi = p.dim_bounds.get(name, (None, None))
            dims.setdefault(name, Dim(name, min=lo, max=hi) if (lo or hi) else Dim(name))
    shapes = {s.name: ({a: dims[n] for a, n in s.symbolic_axes.items()} or None) for s in p.inputs}
    torch.onnx.export(
        p.module,
        _args(p),
        str(path),
        input_names=[s.name for s in p.inputs],
        output_names=[s.name for s in p.outputs],
        opset_version=max(opset, 18),
        dynamo=True,
        external_data=external,
        dynamic_shapes=shapes,
        optimize=True,
        verbose=False,
    )


def _export_legacy(p: Prepared, path: Path, opset: int, external: bool) -> None:
    """TorchScript-tracing exporter with ``dynamic_axes``; external data re-saved with onnx."""
    axes = {s.name: s.symbolic_axes for s in (*p.inputs, *p.outputs) if s.symbolic_axes}
    torch.onnx.export(
        p.module,
        _args(p),
        str(path),
        input_names=[s.name for s in p.inputs],
        output_names=[s.name for s in p.outputs],
        opset_version=opset,
        dynamo=False,
        dynamic_axes=axes,
        do_constant_folding=True,
    )
    if external:
        import onnx

        model = onnx.load(str(path))
        onnx.save_model(
            model, str(path), save_as_external_data=True, location=data_path(path).name, size_threshold=1024
        )


EXPORT_FUNCTIONS: dict[str, ExportFn] = {"dynamo": _export_dynamo, "legacy": _export_legacy}


def _name_dims(values: Any, specs: Sequence[TensorSpec], where: str, artifact: str) -> None:
    by_name = {v.name: v for v in values}
    for s in specs:
        if s.name not in by_name:
            raise ExportFailedError(
                artifact, "export", f"{where} '{s.name}' is missing from the graph (unused by the module?)"
            )
        dims = by_name[s.name].type.tensor_type.shape.dim
        if len(dims) != len(s.shape):
            raise ExportFailedError(
                artifact, "export", f"{where} '{s.name}' has rank {len(dims)}, spec {s.shape}"
            )
        for d, want in zip(dims, s.shape, strict=True):
            if isinstance(want, int):
                d.dim_value = want
            else:
                d.dim_param = want


def finalize_onnx(path: Path, p: Prepared) -> int:
    """Name dims as declared, run ``onnx.checker`` and shape inference in place. Returns the opset."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    _name_dims(model.graph.input, p.inputs, "input", p.name)
    _name_dims(model.graph.output, p.outputs, "output", p.name)
    onnx.save_model(model, str(path))
    try:
        onnx.checker.check_model(str(path))
        onnx.shape_inference.infer_shapes_path(str(path), str(path), check_type=True, strict_mode=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as e:
        raise ExportFailedError(p.name, "onnx.checker / shape inference", str(e).splitlines()[0]) from e
    opsets = [o.version for o in model.opset_import if o.domain in ("", "ai.onnx")]
    return int(opsets[0]) if opsets else 0


def _numpy(x: torch.Tensor) -> np.ndarray:
    return x.detach().cpu().numpy()


def validate_onnx(p: Prepared, path: Path) -> list[Parity]:
    """Run every validation set in onnxruntime (CPU) and in PyTorch; worst parity per output."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = max(1, torch.get_num_threads())
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    per_output: dict[str, list[Parity]] = {s.name: [] for s in p.outputs}
    for i, feeds in enumerate(p.validation):
        with torch.no_grad():
            ref = p.module(**feeds)
        refs = ref if isinstance(ref, (tuple, list)) else (ref,)
        try:
            got = sess.run([s.name for s in p.outputs], {k: _numpy(v) for k, v in feeds.items()})
        except Exception as e:  # onnxruntime raises its own Fail/InvalidArgument types
            msg = str(e).strip().splitlines()[0][:300]
            raise ExportValidationError(
                f"(run, validation set {i})", float("inf"), float("nan"), f"onnxruntime failed: {msg}"
            ) from e
        for spec, r, g in zip(p.outputs, refs, got, strict=True):
            if tuple(r.shape) != tuple(g.shape):
                raise ExportValidationError(
                    spec.name,
                    float("inf"),
                    float("nan"),
                    f"shape {list(g.shape)} in ONNX vs {list(r.shape)} in PyTorch (validation set {i}): "
                    "a size was baked in at export",
                )
            per_output[spec.name].append(compare(spec.name, _numpy(r), g, p.tolerances[spec.name]))
    return [worst(v) for v in per_output.values()]


def _param_bytes(module: torch.nn.Module) -> int:
    tensors = list(module.parameters()) + list(module.buffers())
    return sum(t.numel() * t.element_size() for t in tensors)


def export_onnx(
    p: Prepared,
    out_dir: str | Path,
    *,
    opset: int = 18,
    exporter: str | None = None,
    external_data: bool | None = None,
    allow_drift: bool = False,
    force: bool = False,
    source: Mapping[str, Any] | None = None,
) -> Artifact:
    """Export ``p`` to ``out_dir/<name>.onnx`` (+ ``.onnx.data``) and ``out_dir/<name>.json``.

    Args:
        p: a spec bound to a model (``SPECS[name].bind(model)``).
        out_dir: destination folder (created).
        opset: ONNX opset, ≥ 17 (the dynamo exporter writes at least 18).
        exporter: ``"dynamo"`` / ``"legacy"``; None = the spec's preferred one.
        external_data: force weights into ``<name>.onnx.data`` (True), inline (False), or None =
            external above ~1.8 GB of weights (vit_h).
        allow_drift: keep an artifact that fails validation (recorded in the sidecar).
        force: replace existing files of the same name.
        source: recorded as the sidecar's ``source`` (checkpoint path, sha256 or "random-init", builder args).

    Returns:
        The written :class:`Artifact`.

    Raises:
        OutputExistsError: a file exists and ``force`` is false.
        ExportFailedError: the exporter, checker or shape inference failed.
        ExportValidationError: an output drifts beyond tolerance (nothing is left behind).
    """
    exporter = exporter or p.exporter
    if exporter not in EXPORT_FUNCTIONS:
        raise ConfigError("export.exporter", exporter, "unknown exporter", valid=", ".join(EXPORTERS))
    if opset < MIN_OPSET:
        raise ConfigError("export.opset", opset, "LayerNormalization needs opset >= 17", valid=">= 17")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    final, side = out / f"{p.name}.onnx", sidecar_path(out / f"{p.name}.onnx")
    refuse_foreign_file((final, data_path(final), side), side, force)
    external = (
        bool(external_data) if external_data is not None else _param_bytes(p.module) > EXTERNAL_DATA_BYTES
    )
    t0 = time.perf_counter()
    tmpdir = Path(tempfile.mkdtemp(prefix=f".{p.name}.", suffix=".partial", dir=out))
    try:
        tmp = tmpdir / final.name
        with _quiet() as chatter, torch.no_grad():
            try:
                EXPORT_FUNCTIONS[exporter](p, tmp, opset, external)
            except Exception as e:
                lines = str(e).strip().splitlines() or chatter.getvalue().strip().splitlines()[-1:] or [""]
                raise ExportFailedError(
                    p.name,
                    f"torch.onnx.export ({exporter})",
                    f"{type(e).__name__}: {lines[0][:300]}",
                    "try the other exporter with --exporter "
                    + ("legacy" if exporter == "dynamo" else "dynamo"),
                ) from e
        t_export = time.perf_counter() - t0
        real_opset = finalize_onnx(tmp, p)
        t1 = time.perf_counter()
        parity = validate_onnx(p, tmp)
        t_validate = time.perf_counter() - t1
        failed = [q for q in parity if not q.passed]
        if failed and not allow_drift:
            q = failed[0]
            raise ExportValidationError(q.output, q.max_abs, q.cosine, q.tolerance)
        files = [tmp, *([data_path(tmp)] if data_path(tmp).exists() else [])]
        records = file_records(files, [final.name, data_path(final).name][: len(files)])
        sidecar = {
            "sidecar_version": SIDECAR_VERSION,
            "kind": "onnx",
            "precision": "fp32",  # reduced precisions live in their own ONNX (export/precision.py)
            "name": p.name,
            "spec": p.name,
            "family": p.family,
            "file": final.name,
            "external_data": data_path(final).name if len(files) > 1 else None,
            "inputs": [s.to_dict() for s in p.inputs],
            "outputs": [s.to_dict() for s in p.outputs],
            "opset": real_opset,
            "exporter": exporter,
            "exporter_reason": p.exporter_reason if exporter == p.exporter else "overridden by the user",
            "versions": library_versions(),
            "host": host(),
            "source": dict(source or {"weights": "random-init"}),
            "spec_options": p.options,
            "profiles": {k: v.to_list() for k, v in p.profiles.items()},
            **p.metadata,
            "validation": {
                "passed": not failed,
                "allow_drift": allow_drift,
                "drifting_outputs": [q.output for q in failed],
                "sets": len(p.validation),
                "outputs": [q.to_dict() for q in parity],
            },
            "sha256": files_sha256(files),
            "files": records,  # size and sha256 of each file, checked at every load (utils/integrity)
            "size_bytes": sum(f.stat().st_size for f in files),
            "export_time_s": round(t_export, 2),
            "validate_time_s": round(t_validate, 2),
            "created": now_iso(),
        }
        if len(files) > 1:
            os.replace(files[1], data_path(final))
        elif force and data_path(final).exists():
            data_path(final).unlink()
        os.replace(tmp, final)
        remember_records(out, records)  # the first load need not hash them again
        atomic_write_json(side, sidecar)
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)
    return Artifact(final, sidecar)
