"""``zsplg-fast bench``: components × backends, timed, written as JSON + markdown + PNG.

Every cell ends in one of four states, never an exception: ``ok`` (timed), ``unavailable`` (the
backend cannot run on this machine; its reason from the engines registry), ``n/a`` (the component
has no such mode, e.g. the labeler under torch.compile) or ``failed`` (the error, one line). The JSON
is rewritten after every cell, so a long run that dies keeps what it measured.
"""

from __future__ import annotations

import gc
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from zsplg_fast.bench.backends import BACKENDS, availability, build_engine_for, get_backend, torch_device
from zsplg_fast.bench.cases import BenchContext, Case, NotApplicable
from zsplg_fast.bench.components import COMPONENTS, FAMILY
from zsplg_fast.bench.machine import library_versions, machine_info, runtime_settings
from zsplg_fast.bench.report import SCHEMA, write_json, write_markdown, write_plot
from zsplg_fast.bench.timing import time_callable, time_engine
from zsplg_fast.config import Config, to_dict
from zsplg_fast.utils.outdir import check_replaceable, claim_output, json_with

STATUSES = ("ok", "unavailable", "n/a", "skipped", "failed")
Progress = Callable[[str, str, str], None]  # (case, backend, status)


@dataclass
class Cell:
    """One component case on one backend. ``timing``: device-resident on CUDA, else the only one;
    ``timing_with_copies``: CUDA only, host arrays in and out. ``setup_s``: engine construction,
    including the export / quantization / plan build on first use. ``load_avg_1m``: the machine's
    1-minute load average when the cell finished (other work on a shared machine slows every cell)."""

    component: str
    case: str
    backend: str
    status: str
    reason: str = ""
    unit: str = ""
    items: int = 0
    device: str = ""
    setup_s: float | None = None
    timing: dict[str, Any] | None = None
    timing_with_copies: dict[str, Any] | None = None
    notes: str = ""
    load_avg_1m: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _one_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0][:400]}" if text else type(e).__name__


def _timing_kwargs(cfg: Config, items: int) -> dict[str, Any]:
    b = cfg.bench
    return {
        "warmup": b.warmup,
        "budget_s": b.budget_s,
        "max_iters": b.max_iters,
        "min_iters": b.min_iters,
        "items": items,
    }


def _engine_cell(cell: Cell, case: Case, ctx: BenchContext) -> None:
    ec = ctx.engine_case(case)
    t0 = time.perf_counter()
    engine = build_engine_for(cell.backend, ec, ctx.bench.device, ctx.bench.threads)
    cell.setup_s = round(time.perf_counter() - t0, 3)
    cell.device = str(getattr(engine, "device", "cpu"))
    feeds = ec.feeds()
    kw = _timing_kwargs(ctx.cfg, case.items)
    cuda = cell.device.startswith("cuda")
    cell.timing = time_engine(engine, feeds, device_resident=cuda, **kw).to_dict()
    if cuda:
        cell.timing_with_copies = time_engine(engine, feeds, device_resident=False, **kw).to_dict()
    del engine


def _pipeline_cell(cell: Cell, case: Case, ctx: BenchContext) -> None:
    if case.runner is None:
        raise NotApplicable(f"{case.name} has neither a spec nor a runner")
    backend = get_backend(cell.backend)
    t0 = time.perf_counter()
    fn = case.runner(cell.backend, ctx)
    cell.setup_s = round(time.perf_counter() - t0, 3)
    device = torch_device(ctx.bench.device, backend) if backend.kind == "module" or backend.cuda else "cpu"
    cell.device = device
    sync = None
    if device.startswith("cuda"):
        import torch

        sync = torch.cuda.synchronize
    cell.timing = time_callable(
        fn, sync=sync, cuda_memory=sync is not None, **_timing_kwargs(ctx.cfg, case.items)
    ).to_dict()


def skipped(component: str, backend: str, skip: list[str]) -> bool:
    """True when ``component:backend`` matches an entry of ``bench.skip`` ('*' matches anything)."""
    for item in skip:
        c, _, b = item.partition(":")
        if c in ("*", component) and b in ("*", backend):
            return True
    return False


def run_cell(case: Case, backend: str, ctx: BenchContext, reason: str | None) -> Cell:
    """Time ``case`` on ``backend`` (``reason``: why the backend is unavailable, None if it is)."""
    cell = Cell(case.component, case.name, backend, "ok", unit=case.unit, items=case.items, notes=case.notes)
    if reason:
        cell.status, cell.reason = "unavailable", reason
        return cell
    if skipped(case.component, backend, list(ctx.bench.skip)):
        cell.status, cell.reason = "skipped", "not run on request (bench.skip)"
        return cell
    try:
        (_engine_cell if case.spec else _pipeline_cell)(cell, case, ctx)
    except NotApplicable as e:
        cell.status, cell.reason = "n/a", str(e)
    except Exception as e:  # a cell never stops the matrix: record the error and go on
        cell.status, cell.reason = "failed", _one_line(e)
        cell.timing = cell.timing_with_copies = None
    finally:
        gc.collect()
        cell.load_avg_1m = load_average()
    return cell


def load_average() -> float | None:
    """The 1-minute load average (None where the OS has none)."""
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        return None


def _ordered(components: list[str]) -> list[str]:
    """Group components by model family (in first-seen order), so each model is built once."""
    families: list[str] = []
    for c in components:
        if FAMILY[c] not in families:
            families.append(FAMILY[c])
    return [c for f in families for c in components if FAMILY[c] == f]


COMMAND = "bench"  # the folder marker's command
LEGACY = (json_with("bench.json", "schema", "cells"),)  # results made before markers


def _check_out(out: Path, force: bool) -> None:
    """A bench results folder (replaced with ``force``) or a new one; never a folder of other files."""
    check_replaceable(out, COMMAND, force, legacy=LEGACY)


def artifacts_dir(cfg: Config) -> Path:
    """Where exported ONNX / QDQ / plans are cached: ``bench.artifacts`` or ``export/bench/<out name>``."""
    b = cfg.bench
    return Path(b.artifacts) if b.artifacts else Path("export") / "bench" / Path(b.out).name


def run_bench(cfg: Config, progress: Progress | None = None) -> dict[str, Any]:
    """Run ``cfg.bench.components`` × ``cfg.bench.backends`` and write ``bench.json``, ``bench.md``,
    ``bench.png`` into ``cfg.bench.out``.

    Models: ``cfg.sam`` / ``cfg.clip`` (random weights unless a checkpoint is given), the segmenter from
    ``bench.segmenter_checkpoint`` or a random ``bench.segmenter_backbone``. Returns the report dict
    (schema :data:`SCHEMA`, see :func:`zsplg_fast.bench.report.check_report`).

    Raises:
        OutputExistsError: ``out`` holds a bench run and ``bench.force`` is false, or holds files
            not made by bench (even with ``force``).
    """
    b = cfg.bench
    out = Path(b.out)
    _check_out(out, b.force)
    ctx = BenchContext(cfg, artifacts_dir(cfg))
    if b.threads:
        import torch

        torch.set_num_threads(b.threads)
    reasons = availability(list(b.backends))
    notify = progress or (lambda case, backend, status: None)
    report: dict[str, Any] = {
        "schema": SCHEMA,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "complete": False,
        "settings": {"bench": to_dict(b), "sam": to_dict(cfg.sam), "clip": to_dict(cfg.clip)},
        "artifacts": str(ctx.artifacts),
        "machine": machine_info(),
        "versions": library_versions(),
        "runtime": {**runtime_settings(b.threads), "load_avg_1m_start": load_average()},
        "backends": [
            {
                "name": n,
                "summary": BACKENDS[n].summary,
                "available": reasons[n] is None,
                "reason": reasons[n] or "",
            }
            for n in b.backends
        ],
        "models": {},
        "cells": [],
    }
    claim_output(out, COMMAND, legacy=LEGACY)
    started = time.perf_counter()
    components = _ordered(list(b.components))
    for i, comp in enumerate(components):
        try:
            cases = COMPONENTS[comp](ctx)
        except Exception as e:  # the model could not be built: every cell of the component fails
            for backend in b.backends:
                cell = Cell(comp, comp, backend, "failed", f"building the cases failed: {_one_line(e)}")
                report["cells"].append(cell.to_dict())
            cases = []
        for case in cases:
            for backend in b.backends:
                notify(case.name, backend, "start")
                cell = run_cell(case, backend, ctx, reasons[backend])
                report["cells"].append(cell.to_dict())
                report["models"] = ctx.weights()
                report["elapsed_s"] = round(time.perf_counter() - started, 1)
                write_json(out / "bench.json", report)
                notify(case.name, backend, cell.status)
        if i + 1 == len(components) or FAMILY[components[i + 1]] != FAMILY[comp]:
            ctx.release()
    report["complete"] = True
    report["runtime"]["load_avg_1m_end"] = load_average()
    report["models"] = ctx.weights()
    report["elapsed_s"] = round(time.perf_counter() - started, 1)
    write_json(out / "bench.json", report)
    write_markdown(out / "bench.md", report)
    write_plot(out / "bench.png", report)
    return report
