"""Benchmark report writers: JSON (with a schema check), markdown, a rich table and a log-scale PNG.

The markdown and the table show one row per case and one column per backend: the median latency in
ms with the p90 in parentheses; a cell that did not run shows its state and a numbered note with the
reason (unavailable backends keep their column, so a reader sees what was not measured and why).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from rich.table import Table

from zsplg_fast.utils.io import atomic_write_json, atomic_write_text

SCHEMA = "zsplg_fast.bench/1"
_TOP_KEYS = (
    "schema",
    "created",
    "complete",
    "settings",
    "machine",
    "versions",
    "runtime",
    "backends",
    "models",
    "cells",
)
_CELL_KEYS = (
    "component",
    "case",
    "backend",
    "status",
    "reason",
    "unit",
    "items",
    "device",
    "setup_s",
    "timing",
)
_TIMING_KEYS = (
    "iters",
    "warmup",
    "median_ms",
    "p90_ms",
    "mean_ms",
    "throughput",
    "peak_rss_mib",
    "stopped_by",
)
_STATUSES = ("ok", "unavailable", "n/a", "skipped", "failed")


def check_report(report: Mapping[str, Any]) -> list[str]:
    """Problems with a bench report's structure (empty list = valid against :data:`SCHEMA`)."""
    problems = [f"missing key '{k}'" for k in _TOP_KEYS if k not in report]
    if report.get("schema") != SCHEMA:
        problems.append(f"schema is {report.get('schema')!r}, expected {SCHEMA!r}")
    for k in ("malloc", "torch_threads", "ort_intra_op_threads", "env"):
        if k not in report.get("runtime", {}):
            problems.append(f"runtime.{k} missing")
    for b in report.get("backends", []):
        if not {"name", "available", "reason"} <= set(b):
            problems.append(f"backend entry {b} lacks name/available/reason")
        elif not b["available"] and not b["reason"]:
            problems.append(f"backend {b['name']} is unavailable without a reason")
    for i, c in enumerate(report.get("cells", [])):
        problems += [f"cells[{i}] missing '{k}'" for k in _CELL_KEYS if k not in c]
        if c.get("status") not in _STATUSES:
            problems.append(f"cells[{i}].status = {c.get('status')!r}")
        elif c["status"] == "ok":
            t = c.get("timing") or {}
            problems += [f"cells[{i}].timing missing '{k}'" for k in _TIMING_KEYS if k not in t]
            if t and not (0 < t.get("median_ms", 0) <= t.get("p90_ms", 0) + 1e-9):
                problems.append(f"cells[{i}].timing: need 0 < median <= p90")
        elif not c.get("reason"):
            problems.append(f"cells[{i}] is {c['status']} without a reason")
    return problems


def write_json(path: str | Path, report: Mapping[str, Any]) -> Path:
    """Write the report atomically."""
    atomic_write_json(path, report)
    return Path(path)


def _cases(report: Mapping[str, Any]) -> list[str]:
    seen: list[str] = []
    for c in report["cells"]:
        if c["case"] not in seen:
            seen.append(c["case"])
    return seen


def _grid(report: Mapping[str, Any]) -> tuple[list[str], list[str], dict[tuple[str, str], dict[str, Any]]]:
    backends = [b["name"] for b in report["backends"]]
    cells = {(c["case"], c["backend"]): c for c in report["cells"]}
    return _cases(report), backends, cells


def _fmt_ms(v: float) -> str:
    return f"{v:.0f}" if v >= 100 else (f"{v:.1f}" if v >= 1 else f"{v:.3f}")


def cell_text(cell: Mapping[str, Any] | None, notes: dict[str, int]) -> str:
    """``"812 (840)"`` for a timed cell; ``"unavailable [2]"`` etc. with a numbered note otherwise."""
    if cell is None:
        return "–"
    if cell["status"] == "ok":
        t = cell["timing"]
        return f"{_fmt_ms(t['median_ms'])} ({_fmt_ms(t['p90_ms'])})"
    n = notes.setdefault(cell["reason"], len(notes) + 1)
    return f"{cell['status']} [{n}]"


def _weights_line(report: Mapping[str, Any]) -> str:
    parts = []
    for fam, rec in report.get("models", {}).items():
        name = rec.get("variant") or rec.get("model") or rec.get("backbone") or ""
        w = rec.get("weights", "?")
        if isinstance(w, str) and len(w) == 64:
            w = f"sha256 {w[:12]}…"
        extra = {k: v for k, v in rec.items() if k in ("sam", "clip", "masks")}
        parts.append(f"{fam} {name} {w}" + (f" {extra}" if extra else ""))
    return "; ".join(parts) or "none built"


def _load_line(report: Mapping[str, Any]) -> str:
    r = report["runtime"]
    loads = [c["load_avg_1m"] for c in report["cells"] if c.get("load_avg_1m") is not None]
    cells = f"{min(loads):.1f}–{max(loads):.1f} over the cells" if loads else "not recorded per cell"
    return (
        f"start {r.get('load_avg_1m_start')}, end {r.get('load_avg_1m_end')}, {cells} "
        f"({report['machine'].get('usable_cores')} usable cores; above that, other processes share them)"
    )


def header_lines(report: Mapping[str, Any]) -> list[str]:
    """Machine, software, settings and weights, one bullet each."""
    m, v, r = report["machine"], report["versions"], report["runtime"]
    b = report["settings"]["bench"]
    gpu = m.get("gpu") or None
    gpu_text = f"{gpu['name']} (cc {gpu['compute_capability']}, CUDA {gpu['cuda']})" if gpu else "none"
    return [
        f"- **Machine**: {m['cpu']} ({m['usable_cores']} usable of {m['logical_cores']} logical cores, "
        f"{', '.join(m.get('cpu_flags', []))}), {m['memory_gib']} GiB RAM, GPU: {gpu_text}; {m['os']}",
        f"- **Software**: torch {v.get('torch')}, onnxruntime {v.get('onnxruntime')} "
        f"(providers: {v.get('onnxruntime_providers')}), onnx {v.get('onnx')}, tensorrt {v.get('tensorrt')}, "
        f"open_clip {v.get('open_clip_torch')}, segment-anything {v.get('segment-anything')}, "
        f"Python {m.get('python')}",
        f"- **Allocator / threads**: {r['malloc']}; torch threads {r['torch_threads']}, "
        f"onnxruntime intra-op threads: {r['ort_intra_op_threads']}; nice {r.get('nice')}; "
        f"env {r.get('env')}",
        f"- **Machine load** (1-min load average): {_load_line(report)}",
        f"- **Method**: {b['warmup']} warm-up run(s), then timed runs until {b['budget_s']} s or "
        f"{b['max_iters']} runs (at least {b['min_iters']}); CUDA timings synchronised; medians (p90)",
        f"- **Weights**: {_weights_line(report)} — latency does not depend on weights",
    ]


def markdown(report: Mapping[str, Any]) -> str:
    """The report as markdown: header, latency matrix with notes, detail table, backends table."""
    backends, rows, notes = matrix_rows(report)
    lines = [f"# zsplg-fast bench — {report['created']}", "", *header_lines(report), ""]
    if not report.get("complete", False):
        lines += ["**Incomplete run**: the results below are what was measured before it stopped.", ""]
    lines += ["## Median latency in ms (p90)", ""]
    lines += ["| case | " + " | ".join(backends) + " |", "|---|" + "---:|" * len(backends)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    if notes:
        lines += ["", "Notes:", ""] + [f"- {n}" for n in notes]
    lines += ["", "## Timed cells", ""]
    lines += [
        "| case | backend | device | median ms | p90 ms | with copies ms | items/s | peak RSS MiB "
        "| CUDA max alloc MiB | runs | first run ms | setup s |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for c in report["cells"]:
        if c["status"] != "ok":
            continue
        t, wc = c["timing"], c.get("timing_with_copies") or {}
        first = t.get("warmup_ms") or []
        lines.append(
            f"| {c['case']} | {c['backend']} | {c['device']} | {_fmt_ms(t['median_ms'])} | "
            f"{_fmt_ms(t['p90_ms'])} | {_fmt_ms(wc['median_ms']) if wc else '–'} | "
            f"{t['throughput']:.2f} {c['unit']}/s | {_num(t.get('peak_rss_mib'))} | "
            f"{_num(t.get('cuda_max_allocated_mib'))} | {t['iters']} | "
            f"{_fmt_ms(first[0]) if first else '–'} | {c.get('setup_s')} |"
        )
    lines += ["", "## Backends", "", "| backend | what | available here |", "|---|---|---|"]
    for b in report["backends"]:
        lines.append(
            f"| {b['name']} | {b['summary']} | {'yes' if b['available'] else 'no: ' + b['reason']} |"
        )
    lines += [
        "",
        f"Elapsed: {report.get('elapsed_s', '?')} s. Artifacts cache: `{report.get('artifacts', '')}`.",
    ]
    return "\n".join(lines) + "\n"


def _num(v: float | None) -> str:
    return "–" if v is None else f"{v:.0f}"


def write_markdown(path: str | Path, report: Mapping[str, Any]) -> Path:
    """Write :func:`markdown` atomically."""
    atomic_write_text(path, markdown(report))
    return Path(path)


def matrix_rows(report: Mapping[str, Any]) -> tuple[list[str], list[list[str]], list[str]]:
    """(backend names, rows of [case, cell texts...], numbered notes) as the markdown and the table show."""
    cases, backends, cells = _grid(report)
    notes: dict[str, int] = {}
    rows = [[case, *[cell_text(cells.get((case, b)), notes) for b in backends]] for case in cases]
    return backends, rows, [f"[{n}] {r}" for r, n in sorted(notes.items(), key=lambda kv: kv[1])]


def rich_table(report: Mapping[str, Any]) -> Table:
    """The latency matrix as a rich table (median ms, p90 in parentheses); notes: :func:`matrix_rows`."""
    backends, rows, _ = matrix_rows(report)
    t = Table(title="median latency, ms (p90)")
    t.add_column("case")
    for b in backends:
        t.add_column(b, justify="right")
    for row in rows:
        t.add_row(*row)
    return t


def write_plot(path: str | Path, report: Mapping[str, Any]) -> Path:
    """Latency per case × backend as grouped horizontal bars on a log scale (PNG, atomic)."""
    from zsplg_fast.bench.plot import plot_latency

    return plot_latency(path, report)
