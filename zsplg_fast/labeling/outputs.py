"""The label output folder: paths, the done-marker, the manifest check, atomic writes, error records.

Layout::

    out/.zsplg-fast.json     the folder's marker ({"command": "label"}), written first
    out/manifest.json        config fingerprint, model fingerprints, classes (written once)
    out/labels/<id>.png      palette PNG, 255 = ignore
    out/meta/<id>.json       masks, classes, scores, timings (written after the PNG: marks "done")
    out/errors.jsonl         one line per image still failing: id, path, stage, error type, message
    out/shards/<i>-of-<n>.json   counts of the last run of each shard

Shared by the local pipelined job and the Ray executor, so both write identical, idempotent outputs.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from zsplg_fast.data import Sample, write_label
from zsplg_fast.errors import OutputExistsError
from zsplg_fast.labeling.labeler import LabelResult
from zsplg_fast.utils.io import append_jsonl, atomic_write_json, atomic_write_text, read_jsonl
from zsplg_fast.utils.outdir import check_output, claim_output, json_with

MANIFEST_VERSION = 1
COMMAND = "label"  # the folder marker's command
LEGACY = (json_with("manifest.json", "version", "fingerprint"),)  # label folders before markers


def check_label_output(out: Path) -> bool:
    """Writes nothing: may ``label`` write into ``out``? True if it is a label folder already
    (see :func:`zsplg_fast.utils.outdir.check_output`, which raises for the user's folders)."""
    return check_output(out, COMMAND, legacy=LEGACY)


def output_paths(out: Path, sample_id: str) -> tuple[Path, Path]:
    """(label PNG, meta JSON) paths of a sample id (ids may contain '/', kept as sub-folders)."""
    return out / "labels" / f"{sample_id}.png", out / "meta" / f"{sample_id}.json"


def is_done(out: Path, sample_id: str) -> bool:
    """True when the sample's PNG exists and its meta JSON (written last) parses."""
    png, meta = output_paths(out, sample_id)
    if not (png.is_file() and meta.is_file()):
        return False
    try:
        json.loads(meta.read_text())
    except (OSError, json.JSONDecodeError):
        return False
    return True


def prepare_output(out: Path, manifest: dict[str, Any]) -> None:
    """Claim ``out`` for label (marker first), or check it was made with the same fingerprint; write
    the manifest once.

    Raises OutputExistsError if ``out`` holds another config's labels, or files that are not ours.
    """
    mpath = out / "manifest.json"
    check_label_output(out)
    if mpath.exists():
        try:
            old = json.loads(mpath.read_text())
        except json.JSONDecodeError as e:
            raise OutputExistsError(mpath, f"unreadable manifest ({e}); choose another --out") from e
        if old.get("fingerprint") != manifest["fingerprint"]:
            raise OutputExistsError(
                out,
                f"was labeled with config fingerprint {old.get('fingerprint')}, this run is "
                f"{manifest['fingerprint']}; use another --out (or the same config to resume)",
            )
    claim_output(out, COMMAND, legacy=LEGACY)
    if not mpath.exists():
        atomic_write_json(mpath, {"version": MANIFEST_VERSION, **manifest})


def write_result(out: Path, sample: Sample, result: LabelResult) -> None:
    """Write the PNG, then the meta JSON (the done-marker), each atomically."""
    png, meta = output_paths(out, sample.id)
    write_label(png, result.label)
    atomic_write_json(meta, {"id": sample.id, "image": str(sample.image_path), **result.meta})


def error_record(sample: Sample, err: BaseException, stage: str) -> dict[str, Any]:
    """One ``errors.jsonl`` line: id, path, stage (load | label | write), error type, message."""
    return {
        "id": sample.id,
        "path": str(sample.image_path),
        "stage": stage,
        "error": type(err).__name__,
        "message": str(err),
        "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }


def record_error(errors_path: Path, record: dict[str, Any]) -> None:
    """Append one error record (a single O_APPEND write)."""
    append_jsonl(errors_path, record)


def compact_errors(out: Path, errors_path: Path, ids: set[str] | None = None) -> None:
    """Keep one line per image that is still not done (its latest error); drop the others, and those
    of images no longer among ``ids`` (this run's samples) when given."""
    if not errors_path.exists():
        return
    latest = {str(r.get("id")): r for r in read_jsonl(errors_path)}
    still = [r for i, r in latest.items() if not is_done(out, i) and (ids is None or i in ids)]
    atomic_write_text(errors_path, "".join(json.dumps(r) + "\n" for r in still))


def errors_file(out: Path, shard: tuple[int, int]) -> Path:
    """``errors.jsonl`` for an unsharded run, ``errors-<i>-of-<n>.jsonl`` per shard otherwise."""
    i, n = shard
    return out / ("errors.jsonl" if n == 1 else f"errors-{i}-of-{n}.jsonl")
