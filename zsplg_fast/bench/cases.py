"""Benchmark cases (the rows) and the context that builds their models and artifacts once.

A :class:`Case` is either an *engine case* (an export spec bound to a model, feeds of fixed shape:
every backend runs the same graph) or a *pipeline case* (a ``runner`` that turns a backend name into a
callable, e.g. labeling one image end to end). :class:`BenchContext` builds each model family once,
with ``torch.manual_seed(0)`` before random initialisation, and caches ONNX exports and QDQ models
under ``artifacts/`` keyed by spec, options and source weights, so reruns skip the export.
"""

from __future__ import annotations

import gc
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from zsplg_fast.config import Config, fingerprint
from zsplg_fast.errors import ZsplgError
from zsplg_fast.utils.io import atomic_write_json

Feeds = dict[str, np.ndarray]


class NotApplicable(ZsplgError):
    """This case cannot run on this backend (a table cell 'n/a' with the reason, not a failure)."""


@dataclass
class Case:
    """One row. ``spec``/``options``/``feeds`` for engine cases; ``runner(backend, ctx)`` for pipelines.

    ``axes``: symbolic axis → size in ``feeds`` (TensorRT profiles); ``items``: work items per call
    (``unit``: image, prompt set, text) for throughput; ``notes``: shown in the report.
    """

    component: str
    name: str
    family: str
    unit: str
    items: int
    spec: str | None = None
    options: dict[str, Any] = field(default_factory=dict)
    feeds: Callable[[Any], Feeds] | None = None
    axes: dict[str, int] = field(default_factory=dict)
    runner: Callable[[str, BenchContext], Callable[[], Any]] | None = None
    notes: str = ""


class BenchContext:
    """Models, the test image and the artifact cache for one benchmark run.

    Args:
        cfg: the root config (``sam``, ``clip``, ``bench`` sections).
        artifacts: folder for cached ONNX / QDQ / plan files.
    """

    def __init__(self, cfg: Config, artifacts: Path) -> None:
        self.cfg = cfg
        self.bench = cfg.bench
        self.artifacts = Path(artifacts)
        self._models: dict[str, Any] = {}
        self._records: dict[str, dict[str, Any]] = {}
        self._engine_cases: dict[str, EngineCase] = {}

    # -- models ---------------------------------------------------------------------------------------
    def model(self, family: str) -> Any:
        """The :class:`~zsplg_fast.export.sources.Source` of ``family`` (sam, clip, segmenter), built once."""
        if family not in self._models:
            torch.manual_seed(0)
            self._models[family] = _LOADERS[family](self.cfg)
            self._records[family] = dict(self._models[family].record)
        return self._models[family]

    def release(self) -> None:
        """Drop every built model and bound module (memory for the next family of cases)."""
        self._models.clear()
        self._engine_cases.clear()
        gc.collect()

    def note_weights(self, family: str, record: dict[str, Any]) -> None:
        """Record the weights of a model built outside :meth:`model` (e.g. by the labeler)."""
        self._records[family] = dict(record)

    def weights(self) -> dict[str, Any]:
        """Which weights each built family used (sha256 or ``random-init``), for the report."""
        return dict(self._records)

    # -- image ----------------------------------------------------------------------------------------
    def image_path(self) -> Path:
        """``bench.image`` or a synthetic shapes image of ``bench.image_size`` written to the artifacts."""
        if self.bench.image:
            return Path(self.bench.image)
        from PIL import Image

        from zsplg_fast.config.bench import parse_size
        from zsplg_fast.data.synthetic import render_sample
        from zsplg_fast.utils.io import atomic_path

        h, w = parse_size(self.bench.image_size, "bench.image_size")
        path = self.artifacts / f"bench_image_{h}x{w}.png"
        if not path.is_file():
            img = render_sample(np.random.default_rng(0), (h, w), 6, 6).image
            with atomic_path(path) as tmp:
                Image.fromarray(img).save(tmp, format="PNG")
        return path

    def image(self) -> np.ndarray:
        """(H, W, 3) uint8 RGB of :meth:`image_path`."""
        from zsplg_fast.data import load_image

        return load_image(self.image_path())

    # -- engine cases ---------------------------------------------------------------------------------
    def engine_case(self, case: Case) -> EngineCase:
        """The cached :class:`EngineCase` of ``case`` (same spec + options → same exported artifact)."""
        key = (
            f"{case.spec}:{json.dumps(case.options, sort_keys=True)}:{json.dumps(case.axes, sort_keys=True)}"
        )
        if key not in self._engine_cases:
            self._engine_cases[key] = EngineCase(self, case)
        return self._engine_cases[key]


def _load_sam(cfg: Config) -> Any:
    from zsplg_fast.export.sources import load_sam

    return load_sam(cfg.sam.variant, cfg.sam.checkpoint)


def _load_clip(cfg: Config) -> Any:
    from zsplg_fast.export.sources import load_clip

    return load_clip(cfg.clip.model, cfg.clip.pretrained)


def _load_segmenter(cfg: Config) -> Any:
    from zsplg_fast.export.sources import RANDOM_INIT, Source, load_segmenter
    from zsplg_fast.models.segmenter import build_segmenter

    b = cfg.bench
    if b.segmenter_checkpoint:
        return load_segmenter(b.segmenter_checkpoint)
    model = build_segmenter(b.segmenter_backbone, b.segmenter_classes).eval()
    record = {
        "family": "segmenter",
        "backbone": b.segmenter_backbone,
        "num_classes": b.segmenter_classes,
        "weights": RANDOM_INIT,
    }
    return Source(model, record)


_LOADERS: dict[str, Callable[[Config], Any]] = {
    "sam": _load_sam,
    "clip": _load_clip,
    "segmenter": _load_segmenter,
}


class EngineCase:
    """A case's bound spec, fp32 ONNX and QDQ INT8 ONNX, each made on first use (the ``CaseSource``
    that :func:`zsplg_fast.bench.backends.build_engine_for` consumes)."""

    def __init__(self, ctx: BenchContext, case: Case) -> None:
        self.ctx, self.case = ctx, case
        self._prepared: Any = None
        self._feeds: Feeds | None = None
        self._errors: dict[str, BaseException] = {}

    def prepared(self) -> Any:
        if self._prepared is None:
            from zsplg_fast.export.specs import get_spec

            src = self.ctx.model(self.case.family)
            self._prepared = get_spec(str(self.case.spec)).bind(src.model, **self.case.options)
        return self._prepared

    def feeds(self) -> Feeds:
        if self._feeds is None:
            if self.case.feeds is None:
                raise NotApplicable(f"case {self.case.name} has no feeds")
            self._feeds = self.case.feeds(self.prepared())
        return self._feeds

    def shapes(self) -> dict[str, int]:
        return dict(self.case.axes)

    def _folder(self) -> Path:
        tag = fingerprint({"options": self.case.options}, 8) if self.case.options else "default"
        return self.ctx.artifacts / f"{self.case.spec}-{tag}"

    def _once(self, what: str, make: Callable[[], Path]) -> Path:
        if what in self._errors:  # a failed export fails every backend that needs it, without retrying
            raise self._errors[what]
        try:
            return make()
        except Exception as e:
            self._errors[what] = e
            raise

    def onnx(self) -> Path:
        """The fp32 ONNX of this spec + options (exported and validated once; reused while the key holds)."""
        return self._once("onnx", self._export)

    def _export(self) -> Path:
        from zsplg_fast.export.onnx import export_onnx

        folder = self._folder()
        path = folder / f"{self.case.spec}.onnx"
        src = self.ctx.model(self.case.family)
        key = {
            "spec": self.case.spec,
            "options": self.case.options,
            "source": src.record,
            "seed": 0,
            "exporter": self.ctx.bench.exporter,
        }
        key_file = folder / "bench_key.json"
        if (
            path.is_file()
            and key_file.is_file()
            and json.loads(key_file.read_text()) == json.loads(json.dumps(key, default=str))
        ):
            return path
        export_onnx(self.prepared(), folder, exporter=self.ctx.bench.exporter, source=src.record, force=True)
        atomic_write_json(key_file, key)
        return path

    def qdq_onnx(self) -> Path:
        """A static QDQ INT8 model calibrated on this case's feeds (latency does not depend on scales)."""
        return self._once("qdq", self._quantize)

    def _quantize(self) -> Path:
        from zsplg_fast.export.artifact import sidecar_path
        from zsplg_fast.export.precision import quantize_int8, write_derived_sidecar

        src = self.onnx()
        dst = src.with_name(f"{self.case.spec}.qdq.onnx")
        if dst.is_file() and sidecar_path(dst).is_file():
            return dst
        # one calibration batch: latency does not depend on the scales, and onnxruntime's calibrator
        # keeps every intermediate output of every batch in memory (12 GB RSS for vit_b's encoder)
        report = quantize_int8(src, dst, [self.feeds()])
        write_derived_sidecar(src, dst, "int8", {"quantization": report.to_dict()})
        return dst
