"""``zsplg-fast deploy``: a segmenter checkpoint → a folder to copy to an edge device, with its cost known.

1. export the segmenter (the ``segmenter`` spec, validated against PyTorch) to fp32 ONNX;
2. reduce precision: ``int8`` = static QDQ calibrated on N images of ``calib`` (same preprocessing as
   inference), ``fp16`` = mixed fp16 by ModelOpt AutoCast with fp32 IO (export/precision.py),
   ``fp32`` = as exported;
3. evaluate mIoU of the fp32 reference (the PyTorch checkpoint) and of the deployed model in
   onnxruntime on ``val``, with the training engineer's evaluation (UniMatch protocol);
4. refuse a drop over ``max_miou_drop`` points (:class:`~zsplg_fast.errors.AccuracyDropError`);
5. time fp32 and deployed models here; write ``model.onnx``, ``model.json`` (sidecar), ``README.md``,
   ``build_tensorrt.sh`` (the ``zsplg-fast build`` / equivalent ``trtexec`` line, strongly typed) and a
   Triton model repository ``triton/segmenter/`` (checked against Triton's model-config schema).

Everything is written into a temp folder beside ``out`` and moved into place at the end: a refused or
failed deploy leaves nothing behind, and an existing folder is only replaced with ``force``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
from zsplg_runtime.sidecar import sidecar_path

from zsplg_fast.bench.machine import machine_info, runtime_settings
from zsplg_fast.bench.segmenter import EngineSegmenter, to_input
from zsplg_fast.bench.timing import time_engine
from zsplg_fast.config.bench import DeployConfig, parse_size
from zsplg_fast.data import load_image, open_source
from zsplg_fast.data.sources import Sample
from zsplg_fast.errors import AccuracyDropError, ConfigError, DatasetError
from zsplg_fast.utils.io import atomic_write_json, atomic_write_text, sha256_file
from zsplg_fast.utils.outdir import check_replaceable, write_marker

MODEL, SIDECAR, README = "model.onnx", "model.json", "README.md"  # SIDECAR = sidecar_path(MODEL)
BUILD_SCRIPT = "build_tensorrt.sh"
COMMAND = "deploy"  # the folder marker's command: --force replaces only a folder carrying it
Progress = Callable[[str], None]


def _samples(spec: str | None, split: str | None, key: str, limit: int | None) -> list[Sample]:
    if not spec:
        raise ConfigError(
            key, spec, "a dataset is needed", valid="voc:DIR | synthetic:DIR | coco:DIR | folder:DIR"
        )
    samples = list(open_source(spec, split).samples)
    if not samples:
        raise DatasetError(
            spec, f"no images in split {split!r} (check --{key.split('.')[-1].replace('_', '-')})"
        )
    return samples[:limit] if limit else samples


def calibration_feeds(samples: list[Sample], n: int) -> Iterator[dict[str, np.ndarray]]:
    """``{"image": (1, 3, H, W) float32}`` for the first ``n`` images, preprocessed as inference does."""
    for s in samples[:n]:
        yield {"image": to_input(load_image(s.image_path)).numpy()}


def _evaluate(
    model: Any, samples: list[Sample], num_classes: int, names: list[str], cfg: DeployConfig
) -> Any:
    from zsplg_fast.train.evaluate import evaluate_model

    cm = evaluate_model(model, samples, num_classes, cfg.eval_mode, cfg.window)
    return cm.report(names)


def _latency(path: Path, size: tuple[int, int], cfg: DeployConfig) -> float:
    from zsplg_fast.engines.ort import OrtEngine

    engine = OrtEngine(path, intra_op_threads=cfg.threads)
    feeds = {"image": np.random.default_rng(0).standard_normal((1, 3, *size)).astype(np.float32)}
    return time_engine(
        engine, feeds, warmup=2, budget_s=cfg.latency_budget_s, max_iters=200, min_iters=3
    ).median_ms


def _reduce(cfg: DeployConfig, fp32: Path, dst: Path, notify: Progress) -> dict[str, Any]:
    """Write the deployed model to ``dst``; returns what was done (for the sidecar)."""
    from zsplg_fast.export.precision import convert_fp16, int8_op_types, quantize_int8

    if cfg.precision == "fp32":
        shutil.copyfile(fp32, dst)
        return {}
    if cfg.precision == "fp16":
        notify("fp16 conversion")
        return {"conversion": convert_fp16(fp32, dst)}
    samples = _samples(cfg.calib, cfg.calib_split, "deploy.calib", None)
    n = min(cfg.calib_images, len(samples))
    notify(f"int8 calibration on {n} images")
    report = quantize_int8(
        fp32,
        dst,
        calibration_feeds(samples, n),
        op_types=int8_op_types("segmenter", cfg.int8_target),
        calibrate_method=cfg.calibrate_method,
        target=cfg.int8_target,
    )
    calib = {"source": cfg.calib, "split": cfg.calib_split, "images": n}
    return {"quantization": {**report.to_dict(), "calibration": calib}}


def _move_into_place(tmp: Path, out: Path, force: bool) -> None:
    """``tmp`` → ``out``; an existing deploy folder (force) is renamed aside first and removed after."""
    old = None
    if check_replaceable(out, COMMAND, force):  # checked again: the folder may have changed meanwhile
        old = out.with_name(f".{out.name}.old-{os.getpid()}")
        os.replace(out, old)
    os.replace(tmp, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def deploy(cfg: DeployConfig, progress: Progress | None = None) -> dict[str, Any]:
    """Export, reduce, evaluate, time and write the deploy folder ``cfg.out`` (see the module docstring).

    Returns the sidecar's ``deploy`` block: precision, ``miou`` {reference, deployed, drop_points, …},
    ``latency`` {fp32_ort_ms, deployed_ort_ms, speedup_vs_fp32_ort, …}, and ``out``.

    Raises:
        ConfigError: no checkpoint, or no val dataset (or no calib dataset for int8).
        OutputExistsError: ``out`` exists and ``force`` is false (checked before any work).
        AccuracyDropError: the mIoU drop exceeds ``max_miou_drop``; nothing is written.
    """
    from zsplg_fast.export.onnx import export_onnx
    from zsplg_fast.export.precision import write_derived_sidecar
    from zsplg_fast.export.sources import load_segmenter
    from zsplg_fast.export.specs import get_spec

    notify = progress or (lambda stage: None)
    if not cfg.checkpoint:
        raise ConfigError("deploy.checkpoint", None, "give the segmenter checkpoint (.pth from train)")
    if cfg.precision == "int8" and not cfg.calib:
        raise ConfigError("deploy.calib", None, "int8 needs calibration images", valid="--calib KIND:DIR")
    out = Path(cfg.out)
    check_replaceable(out, COMMAND, cfg.force)  # a folder of the user's is refused, even with force
    val = _samples(cfg.val, cfg.val_split, "deploy.val", cfg.val_images)
    unlabeled = [s for s in val if not s.has_label]
    if unlabeled:
        raise DatasetError(
            unlabeled[0].image_path, "--val needs labeled images (the mIoU is measured on them)"
        )
    if cfg.threads:
        import torch

        torch.set_num_threads(cfg.threads)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent))
    try:
        write_marker(tmp, COMMAND)
        notify("export fp32 ONNX")
        src = load_segmenter(cfg.checkpoint)
        names = list(src.model.class_names or [str(i) for i in range(src.model.config.num_classes)])
        exported = export_onnx(
            get_spec("segmenter").bind(src.model), tmp / "export", exporter=cfg.exporter, source=src.record
        )
        done = _reduce(cfg, exported.path, tmp / MODEL, notify)
        c = src.model.config.num_classes
        notify(f"evaluate fp32 reference on {len(val)} images")
        ref = _evaluate(src.model, val, c, names, cfg)
        notify(f"evaluate deployed {cfg.precision} on {len(val)} images")
        from zsplg_fast.engines.ort import OrtEngine

        dep = _evaluate(
            EngineSegmenter(OrtEngine(tmp / MODEL, intra_op_threads=cfg.threads), c), val, c, names, cfg
        )
        drop = 100.0 * (ref["miou"] - dep["miou"])
        if drop > cfg.max_miou_drop:
            raise AccuracyDropError(
                out, cfg.precision, 100 * ref["miou"], 100 * dep["miou"], cfg.max_miou_drop
            )
        notify("latency")
        size = parse_size(cfg.latency_size, "deploy.latency_size")
        fp32_ms, dep_ms = _latency(exported.path, size, cfg), _latency(tmp / MODEL, size, cfg)
        machine = machine_info()
        block = {
            "precision": cfg.precision,
            "checkpoint": str(cfg.checkpoint),
            "checkpoint_sha256": sha256_file(cfg.checkpoint),
            "folder_name": str(out),
            "miou": {
                "reference": ref["miou"],
                "deployed": dep["miou"],
                "drop_points": drop,
                "limit_points": cfg.max_miou_drop,
                "reference_is": "fp32 PyTorch checkpoint (the fp32 ONNX matches it within export tolerance)",
                "per_class_reference": ref["per_class"],
                "per_class_deployed": dep["per_class"],
                "val": {"source": cfg.val, "split": cfg.val_split},
                "images": len(val),
                "mode": cfg.eval_mode,
                "window": cfg.window,
            },
            "latency": {
                "input": f"1x3x{size[0]}x{size[1]}",
                "fp32_ort_ms": fp32_ms,
                "deployed_ort_ms": dep_ms,
                "speedup_vs_fp32_ort": fp32_ms / dep_ms,
                "machine": f"{machine['cpu']} ({machine['usable_cores']} cores)",
                "runtime": runtime_settings(cfg.threads),
            },
            **done,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        notify("write")
        side = write_derived_sidecar(exported.path, tmp / MODEL, cfg.precision, {"deploy": block})
        from zsplg_fast.deploy.readme import build_script, plan_file, plan_sidecar, render_readme
        from zsplg_fast.deploy.triton import validate_repository, write_repository

        atomic_write_text(tmp / README, render_readme(side))
        atomic_write_text(tmp / BUILD_SCRIPT, build_script(side))
        atomic_write_json(sidecar_path(tmp / plan_file(side)), plan_sidecar(side))  # for trtexec's plan
        validate_repository(write_repository(side, tmp / MODEL, tmp / "triton"))
        shutil.rmtree(tmp / "export")
        for f in [tmp, *tmp.rglob("*")]:  # a folder to copy to devices (mkdtemp makes 0700)
            f.chmod(0o755 if f.is_dir() or f.name == BUILD_SCRIPT else 0o644)
        _move_into_place(tmp, out, cfg.force)
    finally:
        with contextlib.suppress(FileNotFoundError):
            shutil.rmtree(tmp)
    return {**block, "out": str(out)}
