"""The benchmark picture: median latency per case × backend, grouped horizontal bars, log scale.

Bars carry p90 whiskers; backends that did not run on this machine are listed under the plot with
their (shortened) reason, so the picture never silently drops a column. matplotlib runs headless (Agg).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any

from zsplg_fast.utils.io import atomic_write_with


def _short(reason: str, n: int = 70) -> str:
    first = reason.split(";")[0].strip()
    return first if len(first) <= n else first[: n - 1] + "…"


def plot_latency(path: str | Path, report: Mapping[str, Any]) -> Path:
    """Write the PNG to ``path`` atomically and return it.

    ``report``: a bench report (see :func:`zsplg_fast.bench.report.check_report`); cells with status
    ``ok`` are drawn, one bar per backend within each case's group; x = median ms (log), whisker = p90.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cases: list[str] = []
    for c in report["cells"]:
        if c["case"] not in cases:
            cases.append(c["case"])
    backends = [b["name"] for b in report["backends"]]
    timed = {(c["case"], c["backend"]): c["timing"] for c in report["cells"] if c["status"] == "ok"}
    drawn = [b for b in backends if any((case, b) in timed for case in cases)]
    n = max(1, len(drawn))
    bar = 0.8 / n
    fig_h = max(3.0, 0.35 * len(cases) * max(2, n) / 2 + 2.0)
    fig, ax = plt.subplots(figsize=(11, fig_h), dpi=110)
    cmap = plt.get_cmap("tab10")
    for j, b in enumerate(drawn):
        ys, xs, err = [], [], []
        for i, case in enumerate(cases):
            t = timed.get((case, b))
            if t is None:
                continue
            ys.append(i - 0.4 + bar * (j + 0.5))
            xs.append(t["median_ms"])
            err.append(max(0.0, t["p90_ms"] - t["median_ms"]))
        ax.barh(ys, xs, height=bar, color=cmap(j % 10), label=b, xerr=[[0] * len(err), err], capsize=2)
        for y, x in zip(ys, xs, strict=True):
            ax.text(x * 1.05, y, f"{x:.0f}" if x >= 10 else f"{x:.3g}", va="center", fontsize=6)
    ax.set_yticks(range(len(cases)))
    ax.set_yticklabels(cases, fontsize=7)
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.set_xlabel("median latency per call, ms (log scale; whisker = p90)")
    m = report.get("machine", {})
    gpu = (m.get("gpu") or {}).get("name", "no GPU")
    ax.set_title(
        f"zsplg-fast bench — {m.get('cpu', '?')}, {m.get('usable_cores', '?')} cores, {gpu}; "
        f"{report.get('runtime', {}).get('malloc', '')}",
        fontsize=8,
    )
    ax.grid(axis="x", which="both", alpha=0.3)
    if drawn:
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    missing = [b for b in report["backends"] if b["name"] not in drawn]
    if missing:
        text = "not measured here: " + "; ".join(
            f"{b['name']} ({_short(b['reason']) if b['reason'] else 'no cell ran'})" for b in missing
        )
        fig.text(0.01, 0.005, text, fontsize=6, wrap=True, va="bottom")
    fig.tight_layout(rect=(0, 0.06 if missing else 0, 1, 1))

    def save(f: IO[bytes]) -> None:
        fig.savefig(f, format="png")

    try:
        atomic_write_with(path, save)
    finally:
        plt.close(fig)
    return Path(path)
