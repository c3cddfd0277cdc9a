"""Run the stages in order, each in ``<out>/<nn>-<stage>-<fingerprint>/``; complete stages are skipped.

A stage's fingerprint covers its own config and the fingerprints of the stages it consumes, so a
changed setting reruns that stage and everything downstream into new folders, and nothing is lost.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from zsplg_fast.config import Config, fingerprint
from zsplg_fast.config.pipeline import PIPELINE_STAGES
from zsplg_fast.pipeline.stages import STAGES, Context
from zsplg_fast.utils.io import atomic_write_json
from zsplg_fast.utils.outdir import claim_output, json_with

MARKER = "stage.json"
COMMAND = "run"  # the run folder's marker (each stage folder also carries its command's own)
Notify = Callable[[str, str], None]


@dataclass
class StageOutcome:
    """One stage of one run: where, which fingerprint, whether it was reused, its result and time."""

    name: str
    folder: str
    fingerprint: str
    reused: bool
    seconds: float
    result: dict[str, Any]


def _read_marker(folder: Path, fp: str) -> dict[str, Any] | None:
    try:
        m = json.loads((folder / MARKER).read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return m if m.get("complete") and m.get("fingerprint") == fp else None


def run_pipeline(cfg: Config, notify: Notify | None = None) -> list[StageOutcome]:
    """Run ``cfg.pipeline.stages`` in order. ``notify(stage, "start" | "reused" | "done")``.

    Raises OutputExistsError when ``pipeline.out`` holds files that are not a run folder's.
    """
    out = Path(cfg.pipeline.out)
    claim_output(out, COMMAND, legacy=(json_with("summary.json", "stages", "table"),))
    ctx: Context = {}
    fps: dict[str, str] = {}
    outcomes: list[StageOutcome] = []
    say = notify or (lambda stage, event: None)
    for name in cfg.pipeline.stages:
        st = STAGES[name]
        fp = fingerprint({"stage": name, "config": st.keys(cfg), "deps": {d: fps.get(d) for d in st.deps}})
        fps[name] = fp
        folder = out / f"{PIPELINE_STAGES.index(name):02d}-{name}-{fp[:8]}"
        marker = _read_marker(folder, fp)
        if marker is not None:
            ctx[name] = marker["result"]
            outcomes.append(StageOutcome(name, str(folder), fp, True, marker["seconds"], marker["result"]))
            say(name, "reused")
            continue
        say(name, "start")
        folder.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        result = st.run(cfg, ctx, folder)
        seconds = round(time.perf_counter() - t0, 2)
        ctx[name] = result
        atomic_write_json(
            folder / MARKER,
            {"stage": name, "fingerprint": fp, "complete": True, "seconds": seconds, "result": result},
        )
        outcomes.append(StageOutcome(name, str(folder), fp, False, seconds, result))
        say(name, "done")
    atomic_write_json(
        out / "summary.json", {"stages": [o.__dict__ for o in outcomes], "table": stage_table(outcomes)}
    )
    return outcomes


def stage_table(outcomes: list[StageOutcome]) -> dict[str, float | None]:
    """Headline figures: zero-shot / enhanced label mIoU (unlabeled split), final / baseline val mIoU."""
    by = {o.name: o.result for o in outcomes}
    return {
        "zero_shot_label_miou": by.get("zero_shot", {}).get("miou"),
        "enhanced_label_miou": by.get("enhance", {}).get("miou_enhanced"),
        "final_val_miou": (by.get("evaluate") or by.get("final") or {}).get("miou"),
        "baseline_val_miou": by.get("baseline", {}).get("miou"),
    }
