"""Turn training outputs into the shipped package data: fp16 weights, sha256 manifest, measured figures.

``python -m zsplg_fast.toy.ship --sam DIR --clip DIR`` reads ``DIR/sam_toy.pth`` + ``sam_train.json`` and
``DIR/clip_toy.pt`` + ``clip_train.json`` (written by ``zsplg-fast toy train-sam|train-clip``), stores
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

FILES = {"sam": "weights/sam_toy.pth", "clip": "weights/clip_toy.pt"}
SOURCES = {"sam": ("sam_toy.pth", "sam_train.json"), "clip": ("clip_toy.pt", "clip_train.json")}


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


def ship(sam_dir: Path, clip_dir: Path, recommended: dict[str, Any], num_eval: int = 40) -> dict[str, Any]:
    """Write fp16 weights and the manifest into the package; returns the manifest."""
    from zsplg_fast.toy.report import evaluate_toy

    models: dict[str, Any] = {}
    sds32, sds16 = {}, {}
    for kind, (wname, jname) in SOURCES.items():
        src = Path(sam_dir if kind == "sam" else clip_dir)
        train = json.loads((src / jname).read_text())
        sd = torch.load(src / wname, map_location="cpu", weights_only=True)
        sds32[kind], sds16[kind] = sd, to_fp16(sd)
        dst = PACKAGE_DIR / FILES[kind]
        atomic_write_with(dst, lambda f, s=sds16[kind]: torch.save(s, f))
        models[kind] = {
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
    manifest: dict[str, Any] = {
        "version": 1,
        "models": models,
        "recommended": recommended,
        "fp16_parity": parity(sds32, sds16),
    }
    atomic_write_json(PACKAGE_DIR / MANIFEST_NAME, manifest)
    manifest["metrics"] = evaluate_toy(num_eval, rec=recommended)["metrics"]
    manifest["metrics_note"] = f"first {num_eval} images of the toy world's val split (never trained on)"
    atomic_write_json(PACKAGE_DIR / MANIFEST_NAME, manifest)
    return manifest


def main() -> None:  # pragma: no cover - maintenance script
    import argparse

    from zsplg_fast.toy.report import DEFAULT_RECOMMENDED

    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--sam", required=True, type=Path)
    ap.add_argument("--clip", required=True, type=Path)
    ap.add_argument("--recommended", type=Path, help="JSON with 'amg' and 'clip' settings")
    ap.add_argument("--num", type=int, default=40)
    a = ap.parse_args()
    rec = json.loads(a.recommended.read_text()) if a.recommended else DEFAULT_RECOMMENDED
    m = ship(a.sam, a.clip, rec, a.num)
    print(json.dumps({k: m[k] for k in ("fp16_parity", "metrics")}, indent=1))


if __name__ == "__main__":  # pragma: no cover
    main()
