"""`zsplg-fast export`, `build` and `inspect`: options → config → one library call each."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer
from rich.markup import escape
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from zsplg_fast.cli.common import ConfigOpt, SetOpt, build_config, console


def _mb(n: int | float) -> str:
    return f"{n / 1e6:.1f} MB"


def export_cmd(
    what: str = typer.Argument(..., help="sam | clip | segmenter | all"),
    sam: str | None = typer.Option(
        None, "--sam", help="SAM variant: vit_h, vit_l, vit_b, tiny; SAM 2.1: sam2.1_hiera_t|s|b+|l"
    ),
    sam_checkpoint: str | None = typer.Option(None, "--sam-checkpoint", help="official-style SAM .pth"),
    with_preprocess: bool = typer.Option(
        False, "--with-preprocess", help="also export sam_encoder_preprocess"
    ),
    clip: str | None = typer.Option(None, "--clip", help="open_clip model name, e.g. ViT-B-16"),
    clip_pretrained: str | None = typer.Option(None, "--clip-pretrained", help="local CLIP weights file"),
    clip_size: int | None = typer.Option(None, "--clip-size", help="clip_dense input size (square)"),
    classes: str | None = typer.Option(None, "--classes", help="voc | coco | file → text_embeddings.npy"),
    segmenter_checkpoint: str | None = typer.Option(None, "--segmenter-checkpoint", help="segmenter .pth"),
    out: str | None = typer.Option(None, "--out", help="output folder (default export/)"),
    fmt: str = typer.Option("onnx", "--format", help="artifact format (see `zsplg-fast inspect --formats`)"),
    precision: str | None = typer.Option(None, "--precision", help="onnx is fp32; others: `build`"),
    opset: int | None = typer.Option(None, "--opset", help="ONNX opset (>= 17)"),
    exporter: str | None = typer.Option(None, "--exporter", help="dynamo | legacy (default: per spec)"),
    external_data: bool | None = typer.Option(
        None, "--external-data/--no-external-data", help="weights in <name>.onnx.data (default: > 1.8 GB)"
    ),
    decoder_attention: str | None = typer.Option(
        None, "--decoder-attention", help="fused (TensorRT, default) | folded (onnxruntime CPU)"
    ),
    only: list[str] | None = typer.Option(None, "--only", help="export only these specs (repeatable)"),
    allow_drift: bool = typer.Option(False, "--allow-drift", help="keep drifting artifacts (recorded)"),
    force: bool = typer.Option(
        False, "--force", help="replace artifacts zsplg-fast wrote (never your files)"
    ),
    config: Path | None = ConfigOpt,
    set_: list[str] | None = SetOpt,
) -> None:
    """Export validated ONNX artifacts (each checked against PyTorch) with JSON sidecars."""
    from zsplg_fast.export.formats import check_options
    from zsplg_fast.export.pipeline import run_export

    check_options(
        fmt,
        {
            "precision": precision,
            "with_preprocess": with_preprocess or None,
            "decoder_attention": decoder_attention,
        },
    )
    if fmt not in ("onnx", "onnx-int8"):
        raise typer.BadParameter(f"'{fmt}' is made by `zsplg-fast build`", param_hint="--format")
    cfg = build_config(
        config,
        set_,
        {
            "sam.variant": sam,
            "sam.checkpoint": sam_checkpoint,
            "clip.model": clip,
            "clip.pretrained": clip_pretrained,
            "clip.image_size": clip_size,
            "export.out_dir": out,
            "export.format": fmt,
            "export.opset": opset,
            "export.exporter": exporter,
            "export.external_data": external_data,
            "export.allow_drift": allow_drift or None,
            "export.force": force or None,
            "export.with_preprocess": with_preprocess or None,
            "export.decoder_attention": decoder_attention,
            "export.classes": classes,
            "export.segmenter_checkpoint": segmenter_checkpoint,
        },
    )
    with Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    ) as bar:
        tasks: dict[str, Any] = {}

        def progress(name: str, stage: str) -> None:
            if stage == "start":
                tasks[name] = bar.add_task(f"export {name}: torch.onnx → check → validate", total=1)
            elif name in tasks:
                bar.update(tasks[name], completed=1, description=f"export {name}: done")

        rows = run_export(what, cfg, only=only or None, progress=progress)
    table = Table(title=f"artifacts in {cfg.export.out_dir}/")
    for col in ("artifact", "status", "size", "max abs", "cosine", "time", "note"):
        right = col in ("size", "max abs", "cosine", "time")
        table.add_column(col, justify="right" if right else "left", no_wrap=col != "note")
    for r in rows:
        table.add_row(
            r.name,
            r.status,
            _mb(r.size_bytes) if r.size_bytes else "",
            f"{r.max_abs:.2e}" if r.max_abs is not None else "",
            f"{r.cosine:.6f}" if r.cosine is not None else "",
            f"{r.export_time_s:.1f} s" if r.export_time_s is not None else "",
            r.note,
        )
    console.print(table)


def build_cmd(
    onnx: list[Path] = typer.Argument(..., help="exported ONNX artifacts (with their .json sidecars)"),
    precision: str | None = typer.Option(None, "--precision", help="fp32 | fp16 | bf16 | int8 (QDQ only)"),
    out: str | None = typer.Option(None, "--out", help="output folder (default engines/)"),
    profile: list[str] | None = typer.Option(None, "--profile", help="axis=min:opt:max (repeatable)"),
    workspace_gib: float | None = typer.Option(None, "--workspace-gib", help="workspace pool limit"),
    timing_cache: str | None = typer.Option(None, "--timing-cache", help="persisted timing cache file"),
    version_compatible: bool = typer.Option(False, "--version-compatible", help="VERSION_COMPATIBLE plan"),
    optimization_level: int | None = typer.Option(None, "--optimization-level", help="builder level 0-5"),
    force: bool = typer.Option(False, "--force", help="replace a different plan zsplg-fast wrote"),
    calib: str | None = typer.Option(
        None,
        "--calib",
        help="int8: calibration images, a folder or KIND:DIR (default: the config's data.source)",
    ),
    calib_images: int = typer.Option(16, "--calib-images", min=1, help="int8: calibration images used"),
    calib_split: str | None = typer.Option(None, "--calib-split", help="int8: split of --calib"),
    int8_base: str = typer.Option(
        "fp16",
        "--int8-base",
        help="int8: QDQ on the fp16 AutoCast graph (default: unquantized layers run fp16 in TensorRT; "
        "[precision] extra) or on the fp32 graph (fp32: onnxruntime's QDQ, also what CPUs run best)",
    ),
    config: Path | None = ConfigOpt,
    set_: list[str] | None = SetOpt,
) -> None:
    """Build strongly typed TensorRT plans (engines/<name>.<precision>.plan + .json) from the ONNX of that
    precision: given an fp32 export and --precision fp16/bf16/int8, the precision ONNX is made first
    (export/<name>.<precision>.onnx); identical requests reuse the plan."""
    from zsplg_fast.export.formats import check_options
    from zsplg_fast.export.tensorrt import build_engine, check_plan_destination, precision_onnx
    from zsplg_fast.export.tensors import parse_axis_ranges

    check_options("tensorrt", {"precision": precision})
    cfg = build_config(
        config,
        set_,
        {
            "export.precision": precision,
            "export.engines_dir": out,
            "export.profiles": list(profile) if profile else None,
            "export.workspace_gib": workspace_gib,
            "export.timing_cache": timing_cache,
            "export.version_compatible": version_compatible or None,
            "export.optimization_level": optimization_level,
            "export.force": force or None,
        },
    )
    e = cfg.export
    ranges = parse_axis_ranges(e.profiles)
    for path in onnx:
        check_plan_destination(path, e.engines_dir, e.precision)  # before the precision ONNX is made
        feeds, record = (
            _calibration(path, cfg, calib, calib_split, calib_images)
            if e.precision == "int8"
            else (None, None)
        )
        made = precision_onnx(
            path,
            e.precision,
            calibration=feeds,
            calibration_record=record,
            int8_base=int8_base,
            force=e.force,
        )
        art, reused = build_engine(
            made,
            e.engines_dir,
            precision=e.precision,
            profiles=ranges,
            workspace_gib=e.workspace_gib,
            timing_cache=e.timing_cache,
            version_compatible=e.version_compatible,
            optimization_level=e.optimization_level,
            force=e.force,
            decoder_max_batch=e.decoder_max_batch,
        )
        state = "reused (same cache key)" if reused else f"built in {art.sidecar.get('build_time_s')} s"
        console.print(f"{art.path}: {state}, {_mb(art.path.stat().st_size)}", highlight=False)


def _calibration(
    path: Path, cfg: Any, source: str | None, split: str | None, count: int
) -> tuple[list[dict[str, Any]] | None, dict[str, Any] | None]:
    """(int8 calibration feeds for ``path`` from ``count`` images of ``source`` or the config's
    ``data.source``, what was used); (None, None) when the int8 ONNX exists already or the input is
    not an fp32 export."""
    from zsplg_fast.export.artifact import read_sidecar
    from zsplg_fast.export.precision import precision_path
    from zsplg_fast.labeling.calibration import calibration_feeds, calibration_images

    if read_sidecar(path).get("precision", "fp32") != "fp32" or (
        precision_path(path, "int8").is_file() and not cfg.export.force
    ):
        return None, None  # an int8 ONNX already (reused or checked by precision_onnx)
    spec = source or cfg.data.source
    if not spec:
        raise typer.BadParameter(
            "int8 needs calibration images: --calib FOLDER (or KIND:DIR), or data.source in the config",
            param_hint="--calib",
        )
    split = split or (cfg.data.split if not source else None)
    images = calibration_images(spec, split, count)
    console.print(f"int8 calibration of {path.name}: {len(images)} images of {spec}", highlight=False)
    feeds = calibration_feeds(path, images, cfg)
    return feeds, {"source": spec, "split": split, "images": len(images), "feeds": len(feeds)}


def _graph_io(path: Path) -> list[tuple[str, str, str, str]]:
    import onnx

    from zsplg_fast.export.model_files import invalid_onnx, load_onnx

    model = load_onnx(path)
    rows = []
    try:
        for kind, values in (("input", model.graph.input), ("output", model.graph.output)):
            for v in values:
                t = v.type.tensor_type
                dims = [d.dim_param or str(d.dim_value) for d in t.shape.dim]
                dtype = onnx.helper.tensor_dtype_to_np_dtype(t.elem_type).name
                rows.append((kind, v.name, dtype, f"[{', '.join(dims)}]"))
                if not all(isinstance(c, str) for c in rows[-1]):
                    raise TypeError(f"{kind} {v.name!r}: a name is not UTF-8 text")
    except (TypeError, KeyError, ValueError) as e:  # a damaged file that still parses: bytes names, bad types
        raise invalid_onnx(path, e) from e
    return rows


def inspect_cmd(
    artifact: Path | None = typer.Argument(None, help="export/<name>.onnx or engines/<name>.<prec>.plan"),
    as_json: bool = typer.Option(False, "--json", help="print the whole sidecar as JSON"),
    formats: bool = typer.Option(False, "--formats", help="print the table of formats and their options"),
) -> None:
    """Print an artifact's inputs/outputs and its sidecar (or the formats table)."""
    from zsplg_runtime.integrity import describe as describe_integrity
    from zsplg_runtime.integrity import verify_artifact

    from zsplg_fast.export.artifact import read_sidecar, sidecar_path
    from zsplg_fast.export.formats import formats_table

    if formats or artifact is None:
        rows = formats_table()
        table = Table(title="formats")
        for col in rows[0]:
            table.add_column(col)
        for r in rows:
            table.add_row(*r.values())
        console.print(table)
        return
    side = read_sidecar(artifact) if sidecar_path(artifact).is_file() or artifact.suffix != ".onnx" else {}
    checked = (
        verify_artifact(artifact, side) if side and artifact.suffix != ".json" else None
    )  # a mismatch: exit 2, naming the file
    if as_json:
        console.print_json(json.dumps(side))
        return
    io_rows = (
        _graph_io(artifact)
        if artifact.suffix == ".onnx"
        else [
            (kind, d["name"], d["dtype"], str(d["shape"]))
            for kind in ("input", "output")
            for d in side.get(f"{kind}s", [])
        ]
    )
    table = Table(title=str(artifact))
    for col in ("", "name", "dtype", "shape"):
        table.add_column(col)
    for r in io_rows:
        table.add_row(*(escape(c) for c in r))
    console.print(table)
    if not side:
        console.print("[yellow]no sidecar: not exported by zsplg-fast (or incomplete)[/]")
        return
    keys = (
        "spec",
        "kind",
        "precision",
        "exporter",
        "opset",
        "tensorrt",
        "gpu",
        "compute_capability",
        "size_bytes",
    )
    if checked is not None:
        console.print(describe_integrity(checked), highlight=False, soft_wrap=True)
    for k in keys:
        if k in side:
            console.print(f"{k}: {side[k]}", highlight=False, markup=False)  # values are not markup
    for k in ("source", "versions", "preprocessing", "profiles"):
        if k in side:
            console.print(f"{k}: {json.dumps(side[k])}", highlight=False, soft_wrap=True, markup=False)
    nan = float("nan")  # fields checked by read_sidecar (runtime sidecar_fields); absent ones shown as nan
    for o in side.get("validation", {}).get("outputs", []):
        console.print(
            f"parity {escape(str(o.get('output', '?')))}: max abs {o.get('max_abs', nan):.2e}, "
            f"max rel {o.get('max_rel', nan):.2e}, cosine {o.get('cosine', nan):.8f} "
            f"({'ok' if o.get('passed', True) else 'DRIFT'})",
            highlight=False,
        )


def register(root: typer.Typer) -> None:
    """Attach `export`, `build` and `inspect` to the root app."""
    root.command("export")(export_cmd)
    root.command("build")(build_cmd)
    root.command("inspect")(inspect_cmd)
