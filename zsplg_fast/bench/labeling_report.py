"""Markdown rendering of the labeling benchmark report (see :mod:`zsplg_fast.bench.labeling`)."""

from __future__ import annotations

from typing import Any


def _row(cells: list[Any]) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


def _toy_cells(toy: dict[str, Any] | None, variant: str) -> list[Any]:
    """Toy-fidelity cells of a speed variant: prompt-mask IoU, AMG best IoU, masks/image, count ratio,
    label mIoU Δ."""
    if not toy:
        return ["—"] * 5
    row = toy["variants"].get(toy.get("speed_variant_to_toy_variant", {}).get(variant, variant))
    if not row:
        return ["—"] * 5
    prompt = f"{row['prompt_mean_iou']} ({row['prompt_masks_per_image']})"
    if not row["images_counted"]:
        return [prompt, "not reported (< minimum masks per image)", "—", "—", row["label_miou_diff_points"]]
    ref, ours = row["masks_per_image"]["reference"], row["masks_per_image"]["ours"]
    counts = f"{sum(ref) / len(ref):.0f} → {sum(ours) / len(ours):.0f}"
    return [prompt, row["mean_best_iou"], counts, row["count_ratio"], row["label_miou_diff_points"]]


def _toy_section(toy: dict[str, Any]) -> list[str]:
    c, ref = toy["config"], toy["reference"]
    return [
        "## Fidelity on trained weights (toy SAM + toy CLIP, toy world)",
        "",
        f"{len(toy['images'])} held-out toy-world images (val from {c['start']}); "
        f"each variant runs the library's labeler (`build_labeler`, the `label` command's path) against A. "
        f"**Prompt masks:** every prompt of the {c['grid']}×{c['grid']} grid, its 3 outputs upsampled "
        f"and thresholded, IoU with the fp32 mask of the same prompt and output (reference B: its decoder "
        f"equals upstream's to the bit), all of them counted ({3 * c['grid'] ** 2} per image). "
        f"**AMG masks:** AMG at {c['grid']}×{c['grid']} points with pred_iou / stability thresholds "
        f"{c['pred_iou_thresh']} / {c['stability_score_thresh']}, so that every image keeps tens to hundreds "
        f"of masks after box NMS (the toy world has 1–4 objects per image; at the toy's recommended "
        f"thresholds an image keeps 1–5 masks, too few to count); counted: ALL of A's masks of each image "
        f"(reference masks per image: {ref['masks_per_image']}), each matched to its best-IoU mask of the "
        f"variant, averaged per image then over images; an image with fewer than {c['min_masks']} reference "
        f"masks would not be counted. **Labels:** the toy config's labeler (toy_ci.yaml: 16×16, 0.5 / 0.7, "
        f"CLIP classes), mIoU vs ground truth over present classes; A's is {ref['label_miou']}. "
        f"Took {toy.get('seconds', '?')} s.",
        "",
        _row(
            [
                "toy variant",
                "prompt-mask IoU (min image)",
                "images counted",
                "AMG mean best IoU",
                "min image",
                "count ratio",
                "label mIoU",
                "Δ points",
            ]
        ),
        "|---|---|---|---|---|---|---|---|",
        *(
            _row(
                [
                    v,
                    f"{r['prompt_mean_iou']} ({r['prompt_min_image_iou']})",
                    r["images_counted"],
                    r["mean_best_iou"],
                    r["min_image_best_iou"],
                    r["count_ratio"],
                    r["label_miou"],
                    r["label_miou_diff_points"],
                ]
            )
            for v, r in toy["variants"].items()
        ),
        "",
    ]


def render_markdown(report: dict[str, Any]) -> str:
    """The report as markdown tables: one row per grid and variant (speed on the configured models,
    fidelity on the toy models), then the toy and colour-SAM fidelity details."""
    m, s, c = report["machine"], report["settings"], report["config"]
    toy = report.get("toy_fidelity")
    lines = [
        f"# Labeling benchmark (speed: {c['sam_variant']} + {c['clip_model']}, random weights; "
        "fidelity: trained toy SAM + toy CLIP)",
        "",
        f"Machine: {m['cpu']}, {m['usable_cores']} usable cores, {m['memory_gib']} GiB; GPU: {m['gpu']}; "
        f"CPU flags {m.get('cpu_flags')}.",
        f"Allocator: {s['malloc']}. torch threads {s['torch_threads']}, "
        f"ORT intra-op {s['ort_intra_op_threads']}, nice {s['nice']}. "
        f"Load average at start/end: {report['load_average_start_end']}.",
        f"Image {tuple(c['image_hw'])}, {c['images']} images; thresholds pred_iou {c['pred_iou_thresh']}, "
        f"stability {c['stability_score_thresh']}; C/D decoder attention "
        f"{c.get('decoder_attention', 'fused')}. {c.get('note') or ''}",
        "",
        _row(
            [
                "grid",
                "variant",
                "s/image",
                "× vs A",
                "decoder s/image",
                "peak RSS MiB",
                "toy prompt-mask IoU (masks/image)",
                "toy AMG best IoU",
                "toy AMG masks/image (A → ours)",
                "toy count ratio",
                "toy label mIoU Δ (points)",
                "stages (s)",
            ]
        ),
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for grid, summary in report["results"].items():
        for v, r in summary.items():
            stages = ", ".join(f"{k} {t}" for k, t in r["stages_s"].items())
            name = f"{v} ({r['prompt_batch']} prompts/call)" if r.get("prompt_batch") else v
            cells = [grid, name, r["seconds_per_image"], r["speedup_vs_A"], r["stages_s"].get("decoder", "—")]
            fid = ["reference"] * 5 if v == "A" else _toy_cells(toy, v)
            lines.append(_row([*cells, r["peak_rss_mib"], *fid, stages]))
    lines += ["", "Variants: " + "; ".join(f"**{k}** {d}" for k, d in report["variants"].items()), ""]
    par = report.get("decoder_parity_vs_upstream")
    if par:
        lines += [
            f"Decoder parity ({c['sam_variant']}, {par['prompts']} prompts): sam_decoder_image + "
            "sam_decoder_shared vs upstream PromptEncoder + MaskDecoder, max abs "
            f"{par['max_abs_low_res_masks']} (low-res logits), {par['max_abs_iou_predictions']} (IoU).",
            "",
        ]
    if toy:
        lines += _toy_section(toy)
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
