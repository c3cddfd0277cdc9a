"""What ``zsplg-fast export sam|clip|segmenter|all`` runs: build each family's model once, export its
specs, and report one row per artifact. Takes a :class:`~zsplg_fast.config.Config`; never imports Typer.
"""

from __future__ import annotations

import gc
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from zsplg_fast.config import Config
from zsplg_fast.config.export import parse_exporter_override
from zsplg_fast.errors import ConfigError
from zsplg_fast.export.artifact import Artifact, data_path, sidecar_path, summarize_validation
from zsplg_fast.export.onnx import export_onnx
from zsplg_fast.export.quantize import quantize_artifact
from zsplg_fast.export.sources import Source, load_clip, load_sam, load_segmenter
from zsplg_fast.export.specs import get_spec
from zsplg_fast.utils.outdir import check_writable, refuse_foreign_file

FAMILIES = ("sam", "clip", "segmenter")
WHAT = (*FAMILIES, "all")

Progress = Callable[[str, str], None]  # (artifact name, stage: "start" | "done" | "skipped")


@dataclass
class ExportRow:
    """One line of the artifacts table."""

    name: str
    status: str  # exported | skipped | written
    path: str = ""
    size_bytes: int = 0
    max_abs: float | None = None
    cosine: float | None = None
    export_time_s: float | None = None
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_artifact(cls, a: Artifact) -> ExportRow:
        s = a.sidecar
        v = summarize_validation(s["validation"]["outputs"])
        note = "DRIFT allowed" if not s["validation"]["passed"] else s["exporter"]
        return cls(
            a.name,
            "exported",
            str(a.path),
            int(s["size_bytes"]),
            v["max_abs"],
            v["cosine"],
            float(s["export_time_s"]) + float(s["validate_time_s"]),
            note,
        )


def _int8(a: Artifact, force: bool) -> ExportRow:
    q = quantize_artifact(a.path, force=force)
    fid = summarize_validation(q.sidecar["fidelity"]["outputs"])
    t = float(q.sidecar["quantize_time_s"])
    size = int(q.sidecar["size_bytes"])
    return ExportRow(q.name, "quantized", str(q.path), size, fid["max_abs"], fid["cosine"], t, "int8 vs fp32")


# format → what runs after the validated fp32 export (None: nothing more)
AFTER_EXPORT: dict[str, Callable[[Artifact, bool], ExportRow] | None] = {"onnx": None, "onnx-int8": _int8}


def _sam_jobs(cfg: Config) -> list[tuple[str, dict[str, Any]]]:
    from zsplg_fast.models.sam import sam_family

    folded = {"folded": cfg.export.decoder_attention == "folded"}  # the AMG decoders (specs/folded.py)
    if sam_family(cfg.sam.variant) == "sam2":  # SAM 2: its own three artifacts
        return [("sam2_encoder", {}), ("sam2_decoder", {}), ("sam2_decoder_batched", folded)]
    jobs: list[tuple[str, dict[str, Any]]] = [("sam_encoder", {})]
    if cfg.export.with_preprocess:
        jobs.append(("sam_encoder_preprocess", {}))
    shared = [("sam_decoder_image", {}), ("sam_decoder_shared", folded)]  # the labeler prefers this pair
    return [*jobs, ("sam_decoder", {}), ("sam_decoder_batched", {}), *shared]


def _clip_jobs(cfg: Config) -> list[tuple[str, dict[str, Any]]]:
    c = cfg.clip
    dense = {
        "image_size": c.image_size,
        "gem_depth": c.gem_depth,
        "gem_temperature": c.gem_temperature,
        "gem_iters": c.gem_iters,
    }
    return [("clip_dense", dense), ("clip_text", {})]


def _source(family: str, cfg: Config) -> Source | None:
    if family == "sam":
        return load_sam(cfg.sam.variant, cfg.sam.checkpoint)
    if family == "clip":
        return load_clip(cfg.clip.model, cfg.clip.pretrained)
    if not cfg.export.segmenter_checkpoint:
        return None
    return load_segmenter(cfg.export.segmenter_checkpoint)


_JOBS: dict[str, Callable[[Config], list[tuple[str, dict[str, Any]]]]] = {
    "sam": _sam_jobs,
    "clip": _clip_jobs,
    "segmenter": lambda cfg: [("segmenter", {})],
}


def _exporter_for(name: str, cfg: Config) -> str | None:
    overrides = dict(parse_exporter_override(o) for o in cfg.export.exporter_overrides)
    return overrides.get(name, cfg.export.exporter)


def _save_text_embeddings(src: Source, cfg: Config, out: Path) -> ExportRow:
    from zsplg_fast.models import TextClassifier, load_class_names

    names = load_class_names(cfg.export.classes or "voc")
    clf = TextClassifier.from_clip(src.model, names, cfg.clip.templates)
    path = clf.save(out / "text_embeddings.npy", overwrite=cfg.export.force)
    return ExportRow(
        "text_embeddings", "written", str(path), path.stat().st_size, note=f"{len(names)} classes"
    )


def run_export(
    what: str, cfg: Config, only: Sequence[str] | None = None, progress: Progress | None = None
) -> list[ExportRow]:
    """Export the artifacts of ``what`` (a family or ``all``) into ``cfg.export.out_dir``.

    Args:
        what: ``sam``, ``clip``, ``segmenter`` or ``all`` (segmenter only when a checkpoint is set).
        cfg: the full config (sam / clip / export sections).
        only: restrict to these spec names.
        progress: called with (artifact name, stage).
    Returns:
        One row per artifact (exported, written or skipped).
    """
    if what not in WHAT:
        raise ConfigError("what", what, "unknown export target", valid=", ".join(WHAT))
    for name in only or ():
        get_spec(name)
    out = Path(cfg.export.out_dir)
    check_writable(out)  # a file, read-only, not writable or full: before any model loads
    families = FAMILIES if what == "all" else (what,)
    rows: list[ExportRow] = []
    notify = progress or (lambda name, stage: None)
    for family in families:
        jobs = [(n, o) for n, o in _JOBS[family](cfg) if not only or n in only]
        if not jobs:
            continue
        skipped = family == "segmenter" and not cfg.export.segmenter_checkpoint
        for n, _ in [] if skipped else jobs:  # refusals before any model loads (export_onnx: again)
            onnx = out / f"{n}.onnx"
            refuse_foreign_file(
                (onnx, data_path(onnx), sidecar_path(onnx)), sidecar_path(onnx), cfg.export.force
            )
        src = _source(family, cfg)
        if src is None:
            if what != "all":
                raise ConfigError(
                    "export.segmenter_checkpoint", None, "`export segmenter` needs a checkpoint"
                )
            rows.extend(ExportRow(n, "skipped", note="no --segmenter-checkpoint") for n, _ in jobs)
            continue
        for name, options in jobs:
            notify(name, "start")
            prepared = get_spec(name).bind(src.model, **options)
            artifact = export_onnx(
                prepared,
                out,
                opset=cfg.export.opset,
                exporter=_exporter_for(name, cfg),
                external_data=cfg.export.external_data,
                allow_drift=cfg.export.allow_drift,
                force=cfg.export.force,
                source=src.record,
            )
            rows.append(ExportRow.from_artifact(artifact))
            after = AFTER_EXPORT[cfg.export.format]
            if after is not None:
                rows.append(after(artifact, cfg.export.force))
            notify(name, "done")
            del prepared
        if family == "clip" and cfg.export.classes and (not only or "clip_text" in only):
            rows.append(_save_text_embeddings(src, cfg, out))
        del src
        gc.collect()
    return rows
