"""Turn training outputs into the shipped package data: fp16 weights, sha256 manifest, measured figures.

``python -m zsplg_fast.toy.ship [--sam DIR] [--clip DIR] [--backbone DIR]`` reads each folder's weights
and ``*_train.json`` (written by ``zsplg-fast toy train-sam|train-clip|train-backbone``), stores
the weights as float16 under ``zsplg_fast/toy/weights/``, checks fp16 ↔ fp32 parity, evaluates the
shipped files on held-out images and writes ``zsplg_fast/toy/manifest.json``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from zsplg_fast.toy.registry import MANIFEST_NAME, PACKAGE_DIR
from zsplg_fast.utils.io import atomic_write_json, atomic_write_with, sha256_file

FILES = {"sam": "weights/sam_toy.pth", "clip": "weights/clip_toy.pt", "backbone": "weights/backbone_toy.pth"}
SOURCES = {
    "sam": ("sam_toy.pth", "sam_train.json"),
    "clip": ("clip_toy.pt", "clip_train.json"),
    "backbone": ("backbone_toy.pth", "backbone_train.json"),
}


def to_fp16(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Floating tensors → float16 (others unchanged); loaders cast back to the model's float32."""
    return {k: (v.half() if v.is_floating_point() else v).contiguous() for k, v in sd.items()}


@torch.no_grad()
def parity(
    fp32: dict[str, dict[str, torch.Tensor]], fp16: dict[str, dict[str, torch.Tensor]]
) -> dict[str, float]:
    """Output agreement of fp32 and fp16-stored weights: SAM image embedding and CLIP dense features."""
    from zsplg_fast.data.synthetic import TOY_WORLD, render_split_sample
    from zsplg_fast.models.gem import DenseClip
    from zsplg_fast.toy.clip import build_clip_toy
    from zsplg_fast.toy.sam import build_sam_toy

    img = render_split_sample(TOY_WORLD, "val", 0).image
    x = torch.from_numpy(np.ascontiguousarray(img[:256, :256])).permute(2, 0, 1)[None].float()
    out: dict[str, float] = {}
    embs = []
    for sd in (fp32["sam"], fp16["sam"]):
        sam = build_sam_toy()
        sam.load_state_dict(sd)
        embs.append(sam.image_encoder(sam.preprocess(x)))
    out["sam_embedding_max_abs"] = float((embs[0] - embs[1]).abs().max())
    feats = []
    for sd in (fp32["clip"], fp16["clip"]):
        model, _ = build_clip_toy()
        model.load_state_dict(sd)
        feats.append(DenseClip(model.visual, 0)(F.interpolate(x / 255.0, size=(256, 256))))
    out["clip_dense_min_cosine"] = float((feats[0] * feats[1]).sum(1).min())
    return out


def ship(
    dirs: dict[str, Path], recommended: dict[str, Any] | None = None, num_eval: int = 40
) -> dict[str, Any]:
    """Write fp16 weights of the kinds in ``dirs`` ('sam' | 'clip' | 'backbone' → training output folder)
    and update the manifest; entries of other kinds are kept. ``recommended`` (label settings) replaces
    the manifest's; a new manifest without it gets ``report.DEFAULT_RECOMMENDED``. Returns the manifest."""
    path = PACKAGE_DIR / MANIFEST_NAME
    manifest: dict[str, Any] = (
        json.loads(path.read_text()) if path.is_file() else {"version": 1, "models": {}}
    )
    sds32, sds16 = {}, {}
    for kind, src in dirs.items():
        if kind not in SOURCES:
            raise ValueError(f"unknown toy model kind '{kind}'; valid: {', '.join(SOURCES)}")
        wname, jname = SOURCES[kind]
        train = json.loads((Path(src) / jname).read_text())
        sd = torch.load(Path(src) / wname, map_location="cpu", weights_only=True)
        sds32[kind], sds16[kind] = sd, to_fp16(sd)
        dst = PACKAGE_DIR / FILES[kind]
        atomic_write_with(dst, lambda f, s=sds16[kind]: torch.save(s, f))
        manifest["models"][kind] = {
            "file": FILES[kind],
            "sha256": sha256_file(dst),
            "bytes": dst.stat().st_size,
            "dtype": "float16",
            "params": int(sum(v.numel() for k, v in sd.items() if v.is_floating_point())),
            "command": train["command"],
            "seed": train["config"]["seed"],
            "steps": train["config"]["steps"],
            "threads": train["config"]["threads"],
            "train_seconds": train["train_seconds"],
            "config": train["config"],
            "final_training_log": train["history"][-1] if train["history"] else {},
        }
    if recommended is not None:
        manifest["recommended"] = recommended
    elif "recommended" not in manifest:
        from zsplg_fast.toy.report import DEFAULT_RECOMMENDED

        manifest["recommended"] = DEFAULT_RECOMMENDED
    if {"sam", "clip"} <= set(sds32):
        manifest["fp16_parity"] = parity(sds32, sds16)
    atomic_write_json(path, manifest)
    if num_eval and {"sam", "clip"} & set(dirs):
        from zsplg_fast.toy.report import evaluate_toy

        manifest["metrics"] = evaluate_toy(num_eval, rec=manifest.get("recommended"))["metrics"]
        manifest["metrics_note"] = f"first {num_eval} images of the toy world's val split (never trained on)"
        atomic_write_json(path, manifest)
    return manifest


def main() -> None:  # pragma: no cover - maintenance script
    import argparse

    ap = argparse.ArgumentParser(description=__doc__)
    for kind in SOURCES:
        ap.add_argument(f"--{kind}", type=Path, help=f"output folder of `zsplg-fast toy train-{kind}`")
    ap.add_argument("--recommended", type=Path, help="JSON with 'amg' and 'clip' settings")
    ap.add_argument("--num", type=int, default=40)
    a = ap.parse_args()
    rec = json.loads(a.recommended.read_text()) if a.recommended else None
    dirs = {kind: getattr(a, kind) for kind in SOURCES if getattr(a, kind) is not None}
    m = ship(dirs, rec, a.num)
    print(json.dumps({k: m[k] for k in ("fp16_parity", "metrics") if k in m}, indent=1))


if __name__ == "__main__":  # pragma: no cover
    main()
