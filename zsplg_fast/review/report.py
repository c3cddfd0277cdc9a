"""The label report: a static HTML folder (no server, opens from disk) to decide which images to look at.

``index.html`` and ``page-<n>.html``: the counts, class pixel shares with the legend, the review-order
table and overlay thumbnails (each linked to its image, label and meta) for the ``top`` images most in
need of review, ``per_page`` per page, so 10k-image folders stay light. Every file name, class name and
meta string is HTML-escaped; links are percent-encoded. A small inline script counts the thumbnails that
loaded (``data-thumbs-loaded`` / ``data-thumbs-failed`` on ``<body>``).
"""

from __future__ import annotations

import html
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np
from PIL import Image

from zsplg_fast.data import VOC_PALETTE, colorize, load_image
from zsplg_fast.errors import ZsplgError
from zsplg_fast.review.folder import IGNORE, Item, LabelFolder, class_names_with_ignore
from zsplg_fast.review.order import ImageStats, class_shares, review_order
from zsplg_fast.utils.io import atomic_path, atomic_write_text
from zsplg_fast.utils.outdir import check_replaceable, move_into_place, write_marker

THUMB = 192
COMMAND = "labels report"


def _is_old_report(folder: Path) -> bool:
    """A report folder written before markers existed: its index.html is one of ours."""
    try:
        head = (folder / "index.html").read_text(encoding="utf-8", errors="replace")[:400]
    except OSError:
        return False
    return "<title>label report</title>" in head


LEGACY = (_is_old_report,)

CSS = """body{font-family:sans-serif;margin:1.5em;color:#222}table{border-collapse:collapse;margin:.5em 0}
td,th{border:1px solid #ccc;padding:2px 8px;text-align:right}td.l,th.l{text-align:left}
.sw{display:inline-block;width:12px;height:12px;border:1px solid #555;vertical-align:middle;margin-right:4px}
.grid{display:flex;flex-wrap:wrap;gap:10px}.card{width:200px;font-size:12px;word-wrap:break-word}
.card img{display:block;max-width:192px;border:1px solid #999}nav a{margin-right:.6em}"""

SCRIPT = """window.addEventListener('load', function () {
  var ok = 0, bad = 0, imgs = document.querySelectorAll('img.thumb');
  for (var i = 0; i < imgs.length; i++) {
    if (imgs[i].complete && imgs[i].naturalWidth > 0) { ok++; } else { bad++; }
  }
  document.body.setAttribute('data-thumbs-loaded', String(ok));
  document.body.setAttribute('data-thumbs-failed', String(bad));
  document.getElementById('status').textContent = ok + ' thumbnails loaded, ' + bad + ' failed';
});"""


def e(value: Any) -> str:
    """HTML-escape any value (text and attribute safe)."""
    return html.escape(str(value), quote=True)


def href(target: Path, base: Path) -> str:
    """A percent-encoded relative link from the folder ``base`` to ``target`` (absolute file URI if none)."""
    try:
        rel = os.path.relpath(target.resolve(), base.resolve())
        return quote(Path(rel).as_posix())
    except ValueError:
        return target.resolve().as_uri()


def _swatch(v: int) -> str:
    r, g, b = (int(c) for c in VOC_PALETTE[v])
    return f'<span class="sw" style="background:rgb({r},{g},{b})"></span>'


def thumbnail(item: Item, dst: Path) -> None:
    """Overlay (label colours at 50 % over the image, classes > 0 and ignore) scaled to THUMB px."""
    label = item.label()
    over = colorize(label).astype(np.float32)
    try:
        img = load_image(item.image_path).astype(np.float32) if item.image_path else None
    except ZsplgError:
        img = None
    if img is not None and img.shape[:2] == label.shape:
        fg = (label != 0)[..., None]
        over = np.where(fg, 0.5 * img + 0.5 * over, img)
    pic = Image.fromarray(over.clip(0, 255).astype(np.uint8))
    pic.thumbnail((THUMB, THUMB))
    with atomic_path(dst) as tmp:
        pic.save(tmp, format="PNG")


def _shares_table(shares: dict[int, float], names: dict[int, str], iou: dict[int, float] | None) -> str:
    head = "<tr><th class=l>class</th><th>pixel share %</th>" + ("<th>IoU %</th>" if iou else "") + "</tr>"
    rows = []
    for v, s in shares.items():
        cell = f"<td>{100 * iou[v]:.2f}</td>" if iou and v in iou else ("<td>–</td>" if iou else "")
        rows.append(
            f"<tr><td class=l>{_swatch(v)}{e(v)} {e(names.get(v, v))}</td><td>{100 * s:.2f}</td>{cell}</tr>"
        )
    return f"<table>{head}{''.join(rows)}</table>"


def _fmt(x: float | None) -> str:
    return "–" if x is None else f"{x:.3f}"


def _row(rank: int, s: ImageStats, names: dict[int, str]) -> str:
    total = max(1, s.height * s.width)
    top = sorted(s.class_pixels.items(), key=lambda kv: -kv[1])[:3]
    shares = ", ".join(f"{e(names.get(k, k))} {100 * v / total:.1f}%" for k, v in top)
    return (
        f"<tr><td>{rank}</td><td class=l>{e(s.id)}</td><td>{s.need:.3f}</td><td>{_fmt(s.mean_margin)}</td>"
        f"<td>{_fmt(s.min_margin)}</td><td>{100 * s.uncovered:.1f}</td><td>{s.num_masks}</td>"
        f"<td class=l>{shares}</td></tr>"
    )


def _card(rank: int, s: ImageStats, item: Item, thumb: str, out: Path) -> str:
    links = [f'<a href="{href(item.label_path, out)}">label</a>']
    if item.meta_path.is_file():
        links.append(f'<a href="{href(item.meta_path, out)}">meta</a>')
    if item.image_path is not None:
        links.insert(0, f'<a href="{href(item.image_path, out)}">image</a>')
    return (
        f'<div class="card"><a href="{href(item.label_path, out)}"><img class="thumb" src="{thumb}" '
        f'alt="{e(s.id)}"></a><div>#{rank} {e(s.id)}</div><div>need {s.need:.3f} · '
        f"{s.num_masks} masks</div><div>{' · '.join(links)}</div></div>"
    )


def write_report(
    labels_dir: str | Path,
    out: str | Path,
    top: int = 500,
    per_page: int = 100,
    gt: str | Path | None = None,
    force: bool = False,
) -> Path:
    """Write the report folder ``out``; returns ``out/index.html``.

    ``out`` must be new or empty, or (with ``force``) a previous report folder, which is replaced;
    anything else is refused (:mod:`zsplg_fast.utils.outdir`). The folder is built beside ``out`` and
    renamed when complete.

    Args:
        top: thumbnails (and table rows) for the ``top`` images most in need of review; counts cover all.
        per_page: thumbnails per HTML page.
        gt: folder of ground-truth PNGs named like ``labels/``: adds evaluate's per-class IoU.
        force: replace a previous report folder.
    """
    folder = LabelFolder(labels_dir)
    dst = Path(out)
    check_replaceable(dst, COMMAND, force, legacy=LEGACY)
    stats = review_order(folder)
    names = class_names_with_ignore(folder.classes)
    shares = class_shares(stats, len(folder.classes))
    iou = None
    if gt is not None:
        from zsplg_fast.train.evaluate import evaluate_folders

        rep = evaluate_folders(folder.root / "labels", gt, folder.classes, missing="skip")
        iou = {int(r["index"]): float(r["iou"]) for r in rep["per_class"]}
    shown = stats[: max(0, top)]
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dst.name}.", suffix=".tmpdir", dir=dst.parent))
    try:
        write_marker(tmp, COMMAND)
        _write_pages(tmp, dst, folder, stats, shown, names, shares, iou, max(1, per_page))
        move_into_place(tmp, dst, COMMAND, force, legacy=LEGACY)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dst / "index.html"


def _write_pages(
    tmp: Path,
    dst: Path,
    folder: LabelFolder,
    stats: list[ImageStats],
    shown: list[ImageStats],
    names: dict[int, str],
    shares: dict[int, float],
    iou: dict[int, float] | None,
    per_page: int,
) -> None:
    """The pages and thumbnails, written into ``tmp``; links are relative to ``dst``, the final folder."""
    pages = max(1, -(-len(shown) // per_page))
    missing = folder.missing_fields()
    page_name = ["index.html", *(f"page-{n}.html" for n in range(2, pages + 1))]
    nav = "<nav>" + "".join(f'<a href="{p}">page {n}</a>' for n, p in enumerate(page_name, 1)) + "</nav>"
    legend = " ".join(f"{_swatch(v)}{e(names[v])}" for v in shares if v != 0)
    for n in range(pages):
        chunk = shown[n * per_page : (n + 1) * per_page]
        cards, rows = [], []
        for k, s in enumerate(chunk, n * per_page + 1):
            item = folder.get(s.id)
            thumbnail(item, tmp / "thumbs" / f"{k:06d}.png")  # type: ignore[arg-type]
            cards.append(_card(k, s, item, f"thumbs/{k:06d}.png", dst))  # type: ignore[arg-type]
            rows.append(_row(k, s, names))
        head = (
            "<tr><th>#</th><th class=l>image</th><th>need</th><th>mean margin</th><th>min margin</th>"
            "<th>uncovered %</th><th>masks</th><th class=l>largest classes</th></tr>"
        )
        note = f"<p>meta lacks {e(missing)}: older labels, the order uses fallbacks.</p>" if missing else ""
        body = (
            f"<h1>Label report: {e(folder.root)}</h1><p>{len(stats)} images; showing the "
            f"{len(shown)} most in need of review, page {n + 1} of {pages} ({len(chunk)} here). "
            f'<span id="status">thumbnails loading…</span></p>{note}{nav}'
            f"<h2>Class pixel shares{' and IoU against ground truth' if iou else ''}</h2>"
            f"{_shares_table(shares, names, iou)}"
            "<h2>Review order</h2><p>need = 0.5·(1 − mean margin) + 0.25·(1 − min margin) + 0.25·uncovered "
            f"(margin: CLIP top-1 minus top-2 probability).</p><table>{head}{''.join(rows)}</table>"
            f'<h2>Thumbnails</h2><p>{legend}</p><div class="grid">{"".join(cards)}</div>{nav}'
        )
        page = (
            '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>label report</title>'
            f'<link rel="icon" href="data:,"><style>{CSS}</style><script>{SCRIPT}</script></head>'
            f"<body>{body}</body></html>\n"
        )
        atomic_write_text(tmp / page_name[n], page)


__all__ = ["IGNORE", "write_report"]
