"""``infer``: run a deploy folder on an image or a folder of images (``zsplg-runtime infer`` and
``zsplg-fast infer`` both run this loop).

Writes ``out/labels/<id>.png`` (palette PNG with the sidecar's palette, class index per pixel),
optionally ``out/overlays/<id>.png`` (image blended with the colour mask, legend of class names),
``out/errors.jsonl`` (one line per image that could not be read or run: id, path, error type, message)
and ``out/report.json`` (counts, backend, timing). Ids are paths relative to the input folder without
the extension ('/' kept as sub-folders), or the file stem for a single image.

Output rules (as ``label``): every file is written atomically; ``out`` carries the ``infer`` marker and
a folder without it (the user's files, another command's) is refused; a run that stopped before its
``report.json`` resumes on rerun (images whose outputs exist are not predicted again); a finished run is
replaced only with ``force``. The first failed write stops the run (exit 1); bad images are recorded
and counted (exit 3 from the CLIs).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from zsplg_runtime.errors import ConfigError, FeedError, OutputExistsError, OutputWriteError
from zsplg_runtime.images import load_image
from zsplg_runtime.inputs import image_inputs
from zsplg_runtime.io import append_jsonl, atomic_write_json
from zsplg_runtime.labels import write_label
from zsplg_runtime.outdir import check_output, claim_output, json_with
from zsplg_runtime.sidecar import open_artifact

Progress = Callable[[int, int, str], None]  # (done, total, sample id)
MODEL = "model.onnx"
COMMAND = "infer"  # the folder marker's command
LEGACY = (json_with("report.json", "deploy_dir", "model_sha256"),)  # infer runs before markers


class Predictor(Protocol):
    """What the loop runs: ``predict((H, W, 3) uint8) -> (H, W) uint8``; ``device`` for the report;
    ``sizes``: the (min, opt, max) ``image`` shapes it covers (a TensorRT plan), None for any size;
    ``mode``: the size policy (``original``: the whole image, checked against ``sizes``)."""

    device: str
    sizes: Any
    mode: str

    def predict(self, image: np.ndarray) -> np.ndarray: ...


# backend name → opener(deploy_dir, sidecar, out, threads) -> Predictor
Opener = Callable[[Path, dict[str, Any], Path, int | None], Predictor]


def _runtime_opener(backend: str) -> Opener:
    def open_(d: Path, side: dict[str, Any], out: Path, threads: int | None) -> Predictor:
        from zsplg_runtime.segmenter import BACKENDS, Segmenter

        return Segmenter(BACKENDS[backend](d, side, threads, 0), side, d / "model.json")

    return open_


OPENERS: dict[str, Opener] = {"ort": _runtime_opener("ort"), "trt": _runtime_opener("trt")}


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


def _done(dst: Path, sid: str, overlays: bool) -> bool:
    done = (dst / "labels" / f"{sid}.png").is_file()
    return done and (not overlays or (dst / "overlays" / f"{sid}.png").is_file())


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
    openers: Mapping[str, Opener] | None = None,
) -> dict[str, Any]:
    """Predict every image of ``inputs`` with the deployed model in ``deploy_dir``; write into ``out``.

    Args:
        deploy_dir: a folder written by ``zsplg-fast deploy``.
        inputs: an image file or a folder (recursive).
        out: output folder; refused if it holds files not written by infer, or a finished run's
            ``report.json`` unless ``force`` (which redoes it, never a folder of other files); a run
            stopped before its report resumes.
        backend: a key of ``openers`` (:data:`OPENERS` here: ``ort`` = onnxruntime CPU, ``trt`` = the
            plan built on the target; zsplg-fast adds ``torch`` and a ``trt`` that builds the plan).
        overlays: also write ``overlays/<id>.png``; ``alpha`` in [0, 1] is the mask's weight.
    Returns:
        The report: ``images``, ``written``, ``resumed``, ``failed``, ``backend``, ``seconds``,
        ``images_per_s``.
    Raises:
        ConfigError: unknown backend; DatasetError: no input images; OutputExistsError: ``out`` used;
        OutputWriteError: a write failed (the run stops there).
    """
    from zsplg_runtime.viz import full_palette, write_overlay

    table = OPENERS if openers is None else openers
    if backend not in table:
        raise ConfigError("infer.backend", backend, "unknown backend", valid=", ".join(table))
    d, dst = Path(deploy_dir), Path(out)
    ours = check_output(dst, COMMAND, legacy=LEGACY)  # before the model loads; writes nothing
    side = open_artifact(d / MODEL)  # sidecar checks + size/sha256 of model.onnx, every backend
    finished = (dst / "report.json").exists()
    if finished and not force:
        raise OutputExistsError(dst, "holds a previous infer run; pass --force or choose another --out")
    samples = image_inputs(Path(inputs))
    names = list(side.get("class_names") or [])
    palette = full_palette(side.get("palette"))
    model = table[backend](d, side, dst, threads)
    covers = model.sizes  # TensorRT: the sizes the plan covers
    claim_output(dst, COMMAND, legacy=LEGACY)  # the model loaded: decided to run
    resume = ours and not finished  # a run that stopped before its report: keep what it wrote
    (dst / "errors.jsonl").unlink(missing_ok=True)
    (dst / "report.json").unlink(missing_ok=True)
    notify = progress or (lambda done, total, sid: None)
    written = failed = resumed = 0
    t0 = time.perf_counter()
    for i, (sid, path) in enumerate(samples):
        if resume and _done(dst, sid, overlays):
            resumed += 1
            notify(i + 1, len(samples), sid)
            continue
        try:
            image = load_image(path)
            if covers and model.mode == "original":
                check_size(image.shape[:2], covers, backend)
            label = model.predict(image)
            write_label(dst / "labels" / f"{sid}.png", label, palette)
            if overlays:
                write_overlay(dst / "overlays" / f"{sid}.png", image, label, names, palette, alpha)
            written += 1
        except OutputWriteError:  # disk full, permission, read-only: stop at the first failed write
            raise
        except Exception as e:  # a bad image is recorded and skipped; the run goes on
            failed += 1
            record = {"id": sid, "path": str(path), "error": type(e).__name__, "message": str(e)[:500]}
            append_jsonl(dst / "errors.jsonl", record)
        notify(i + 1, len(samples), sid)
    seconds = time.perf_counter() - t0
    report = {
        "deploy_dir": str(d),
        "model_sha256": side.get("sha256"),
        "precision": side.get("precision"),
        "backend": backend,
        "device": str(model.device),
        "inputs": str(inputs),
        "images": len(samples),
        "written": written,
        "resumed": resumed,
        "failed": failed,
        "overlays": overlays,
        "sizes_covered": describe_sizes(covers),
        "seconds": round(seconds, 3),
        "images_per_s": round(written / seconds, 3) if seconds > 0 else None,
    }
    atomic_write_json(dst / "report.json", report)
    return report
