"""Markdown rendering of the labeling benchmark report (see :mod:`zsplg_fast.bench.labeling`)."""

from __future__ import annotations

from typing import Any


def _row(cells: list[Any]) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


def render_markdown(report: dict[str, Any]) -> str:
    """The report as markdown tables: one row per grid and variant, then the colour-SAM fidelity."""
    m, s, c = report["machine"], report["settings"], report["config"]
    lines = [
        f"# Labeling benchmark ({c['sam_variant']} + {c['clip_model']}, random weights)",
        "",
        f"Machine: {m['cpu']}, {m['usable_cores']} usable cores, {m['memory_gib']} GiB; GPU: {m['gpu']}.",
        f"Allocator: {s['malloc']}. torch threads {s['torch_threads']}, "
        f"ORT intra-op {s['ort_intra_op_threads']}, nice {s['nice']}. "
        f"Load average at start/end: {report['load_average_start_end']}.",
        f"Image {tuple(c['image_hw'])}, {c['images']} images; thresholds pred_iou {c['pred_iou_thresh']}, "
        f"stability {c['stability_score_thresh']}. {c.get('note') or ''}",
        "",
        _row(
            [
                "grid",
                "variant",
                "s/image",
                "images/s",
                "× vs A",
                "peak RSS MiB",
                "mean best IoU",
                "count ratio",
            ]
        )[:-1]
        + "| stages (s) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for grid, summary in report["results"].items():
        for v, r in summary.items():
            f = r.get("fidelity", {})
            stages = ", ".join(f"{k} {t}" for k, t in r["stages_s"].items())
            name = f"{v} ({r['prompt_batch']} prompts/call)" if r.get("prompt_batch") else v
            cells = [
                grid,
                name,
                r["seconds_per_image"],
                r["images_per_s"],
                r["speedup_vs_A"],
                r["peak_rss_mib"],
            ]
            lines.append(_row([*cells, f.get("mean_best_iou", "—"), f.get("count_ratio", "—"), stages]))
    lines += ["", "Variants: " + "; ".join(f"**{k}** {d}" for k, d in report["variants"].items()), ""]
    rows = report.get("colour_sam_fidelity")
    if rows:
        head = ["grid", "pred_iou / stability thr", "masks upstream", "masks ours", "mean best IoU"]
        lines += [
            "## Structured-mask fidelity (colour SAM, same AMG code paths)",
            "",
            _row([*head, "upstream s", "ours s"]),
            "|---|---|---|---|---|---|---|",
        ]
        for r in rows:
            thr = f"{r['pred_iou_thresh']} / {r['stability_score_thresh']}"
            cells = [r["points_per_side"], thr, r["masks_upstream"], r["masks_ours"], r["mean_best_iou"]]
            lines.append(_row([*cells, r["upstream_s"], r["ours_s"]]))
    return "\n".join(lines) + "\n"
