"""``zsplg-fast infer``: run a deploy folder on an image or a folder of images.

Writes ``out/labels/<id>.png`` (palette PNG with the sidecar's palette, class index per pixel),
optionally ``out/overlays/<id>.png`` (image blended with the colour mask, legend of class names),
``out/errors.jsonl`` (one line per image that could not be read or run: id, path, error type, message)
and ``out/report.json`` (counts, backend, timing). Ids are paths relative to the input folder without
the extension ('/' kept as sub-folders), or the file stem for a single image. Predictions use
:func:`zsplg_fast.bench.segmenter.predict_label`, the code evaluation scores.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from zsplg_fast.bench.segmenter import EngineSegmenter, predict_label
from zsplg_fast.data import load_image, write_label
from zsplg_fast.data.sources import Sample
from zsplg_fast.errors import (
    ConfigError,
    DatasetError,
    FeedError,
    OutputExistsError,
    OutputWriteError,
    SidecarError,
)
from zsplg_fast.utils.io import append_jsonl, atomic_write_json
from zsplg_fast.utils.outdir import check_output, claim_output, json_with

Progress = Callable[[int, int, str], None]  # (done, total, sample id)
MODEL = "model.onnx"
COMMAND = "infer"  # the folder marker's command
LEGACY = (json_with("report.json", "deploy_dir", "model_sha256"),)  # infer runs before markers


def _ort(d: Path, side: dict[str, Any], out: Path, threads: int | None) -> Any:
    from zsplg_fast.engines.ort import OrtEngine

    return OrtEngine(d / MODEL, intra_op_threads=threads)


def _torch(d: Path, side: dict[str, Any], out: Path, threads: int | None) -> Any:
    """The fp32 PyTorch module rebuilt from the sidecar's source checkpoint (which must still exist)."""
    from zsplg_fast.engines import load_engine

    return load_engine(d / MODEL, backend="torch")


def _trt(d: Path, side: dict[str, Any], out: Path, threads: int | None) -> Any:
    """A TensorRT plan of ``model.onnx`` at the deployed precision, built or reused in ``out/engines``."""
    from zsplg_fast.engines import load_engine
    from zsplg_fast.export.tensorrt import build_engine

    claim_output(out, COMMAND, legacy=LEGACY)  # the plan is built inside ``out``
    engines = out / "engines"
    artifact, _ = build_engine(
        d / MODEL, engines, precision=str(side["precision"]), timing_cache=engines / "timing.cache"
    )
    return load_engine(artifact.path, backend="trt")


ENGINES: dict[str, Callable[[Path, dict[str, Any], Path, int | None], Any]] = {
    "ort": _ort,
    "torch": _torch,
    "trt": _trt,
}


def describe_sizes(profile: Any) -> str:
    """``"256x256 to 1024x1024"`` (H x W of an ``image`` (B, 3, H, W) profile), or ``"any"``."""
    if not profile:
        return "any"
    lo, _, hi = profile
    return f"{lo[-2]}x{lo[-1]} to {hi[-2]}x{hi[-1]}"


def check_size(hw: tuple[int, int], profile: Any, backend: str) -> None:
    """Refuse an image whose (H, W) lies outside the plan's ``image`` profile, saying what it covers.

    Raises:
        FeedError: naming the image size, the sizes covered and how to widen them.
    """
    lo, _, hi = profile
    h, w = int(hw[0]), int(hw[1])
    if not (lo[-2] <= h <= hi[-2] and lo[-1] <= w <= hi[-1]):
        raise FeedError(
            "image",
            f"a size the {backend} plan covers ({describe_sizes(profile)}); rebuild it with "
            "--profile height=MIN:OPT:MAX --profile width=MIN:OPT:MAX, or use --backend ort",
            f"{h}x{w}",
        )


def _inputs(path: Path) -> list[Sample]:
    from zsplg_fast.data.folder import list_images, sample_id

    if path.is_dir():
        samples = [Sample(sample_id(p, path), p) for p in list_images(path)]
        if not samples:
            raise DatasetError(path, "no image files found (jpg, png, bmp, webp, tif)")
        return samples
    if not path.exists():
        raise DatasetError(path, "input not found; give an image file or a folder of images")
    return [Sample(path.stem, path)]


def _num_classes(side: dict[str, Any], d: Path, engine: Any) -> int:
    """C: the number of class names, which must match the logits' (B, C, H, W) channels the sidecar and
    the model itself declare (types checked on read); the logits' C when the sidecar names no classes."""
    names = side.get("class_names") or []
    declared = [(side.get("outputs") or [{}])[0].get("shape", [])]
    session = getattr(engine, "session", None)
    if session is not None:  # onnxruntime: what the graph says
        declared.append(list(session.get_outputs()[0].shape))
    counts = {s[1] for s in declared if len(s) == 4 and isinstance(s[1], int) and s[1] >= 1}
    if names and counts - {len(names)}:
        raise SidecarError(
            d / "model.json",
            f"{len(names)} class names, but the model's logits have {sorted(counts)} channels; deploy again",
        )
    if not names and len(counts) != 1:
        raise SidecarError(
            d / "model.json",
            "has no 'class_names' and its first output is not (B, C, H, W) logits; deploy again",
        )
    return len(names) or counts.pop()


def infer(
    deploy_dir: str | Path,
    inputs: str | Path,
    out: str | Path,
    backend: str = "ort",
    overlays: bool = False,
    alpha: float = 0.5,
    threads: int | None = None,
    force: bool = False,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Predict every image of ``inputs`` with the deployed model in ``deploy_dir``; write into ``out``.

    Args:
        deploy_dir: a folder written by :func:`zsplg_fast.deploy.build.deploy`.
        inputs: an image file or a folder (recursive).
        out: output folder; refused if it holds files not written by infer, or a previous
            ``report.json`` unless ``force`` (which reuses it, never a folder of other files).
        backend: ``ort`` (onnxruntime CPU), ``trt`` (TensorRT plan built here) or ``torch`` (the fp32
            checkpoint the folder was made from).
        overlays: also write ``overlays/<id>.png``; ``alpha`` in [0, 1] is the mask's weight.
    Returns:
        The report: ``images``, ``written``, ``failed``, ``backend``, ``seconds``, ``images_per_s``.
    Raises:
        ConfigError: unknown backend; DatasetError: no input images; OutputExistsError: ``out`` used.
    """
    from zsplg_fast.export.artifact import read_sidecar
    from zsplg_fast.viz import full_palette, write_overlay

    if backend not in ENGINES:
        raise ConfigError("infer.backend", backend, "unknown backend", valid=", ".join(ENGINES))
    d, dst = Path(deploy_dir), Path(out)
    check_output(dst, COMMAND, legacy=LEGACY)  # before the model loads; writes nothing
    side = read_sidecar(d / MODEL)
    if (dst / "report.json").exists() and not force:
        raise OutputExistsError(dst, "holds a previous infer run; pass --force or choose another --out")
    samples = _inputs(Path(inputs))
    names = list(side.get("class_names") or [])
    palette = full_palette(side.get("palette"))
    engine = ENGINES[backend](d, side, dst, threads)
    model = EngineSegmenter(engine, _num_classes(side, d, engine))
    covers = (getattr(model.engine, "profiles", None) or {}).get("image")  # TensorRT: sizes it covers
    claim_output(dst, COMMAND, legacy=LEGACY)  # the model loaded: decided to run
    (dst / "errors.jsonl").unlink(missing_ok=True)
    evaluated = side.get("deploy", {}).get("miou", {})
    mode = "original" if evaluated.get("mode") in (None, "center_crop") else evaluated["mode"]
    window = int(evaluated.get("window", 321))
    notify = progress or (lambda done, total, sid: None)
    written = failed = 0
    t0 = time.perf_counter()
    for i, s in enumerate(samples):
        try:
            image = load_image(s.image_path)
            if covers and mode == "original":
                check_size(image.shape[:2], covers, backend)
            label = predict_label(model, image, mode, window)
            write_label(dst / "labels" / f"{s.id}.png", label, palette)
            if overlays:
                write_overlay(dst / "overlays" / f"{s.id}.png", image, label, names, palette, alpha)
            written += 1
        except OutputWriteError:  # disk full, permission, read-only: stop at the first failed write
            raise
        except Exception as e:  # a bad image is recorded and skipped; the run goes on
            failed += 1
            record = {
                "id": s.id,
                "path": str(s.image_path),
                "error": type(e).__name__,
                "message": str(e)[:500],
            }
            append_jsonl(dst / "errors.jsonl", record)
        notify(i + 1, len(samples), s.id)
    seconds = time.perf_counter() - t0
    report = {
        "deploy_dir": str(d),
        "model_sha256": side.get("sha256"),
        "precision": side.get("precision"),
        "backend": backend,
        "device": str(getattr(model.engine, "device", "cpu")),
        "inputs": str(inputs),
        "images": len(samples),
        "written": written,
        "failed": failed,
        "overlays": overlays,
        "sizes_covered": describe_sizes(covers),
        "seconds": round(seconds, 3),
        "images_per_s": round(written / seconds, 3) if seconds > 0 else None,
    }
    atomic_write_json(dst / "report.json", report)
    return report
