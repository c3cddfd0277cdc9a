"""The short README of a deploy folder: what is in it, how to run it, how to build it with TensorRT."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# trtexec flags per precision: an explicit-QDQ model builds with --int8 (fp16 allowed for the layers
# left in float); an fp16-converted model with --fp16; fp32 with none.
TRTEXEC_FLAGS: dict[str, str] = {"fp32": "", "fp16": " --fp16", "int8": " --int8 --fp16"}


def trtexec_command(sidecar: Mapping[str, Any], model: str = "model.onnx") -> str:
    """The ``trtexec`` build command for a Jetson (dynamic H/W profile from the sidecar's profiles)."""
    precision = str(sidecar["precision"])
    prof = sidecar.get("profiles", {})
    b, h, w = (
        prof.get("batch", [1, 1, 1]),
        prof.get("height", [256, 512, 1024]),
        prof.get("width", [256, 512, 1024]),
    )
    shapes = " ".join(
        f"--{k}Shapes=image:{b[i]}x3x{h[i]}x{w[i]}" for i, k in enumerate(("min", "opt", "max"))
    )
    return f"trtexec --onnx={model}{TRTEXEC_FLAGS[precision]} {shapes} --saveEngine=model.{precision}.plan"


def _pct(v: float) -> str:
    return f"{100 * v:.2f}"


def render_readme(sidecar: Mapping[str, Any]) -> str:
    """README.md text for a deploy folder described by ``sidecar`` (``model.json``)."""
    d = sidecar["deploy"]
    m, lat = d["miou"], d["latency"]
    pre = sidecar.get("preprocessing", {})
    names = sidecar.get("class_names", [])
    size = lat["input"]
    speed = lat.get("speedup_vs_fp32_ort")
    return f"""# Deployed segmenter ({d["precision"]})

DeepLabV3+ exported from `{d["checkpoint"]}` (sha256 `{str(d["checkpoint_sha256"])[:16]}…`),
{len(names)} classes: {", ".join(names)}.

| file | what |
|---|---|
| `model.onnx` | {d["precision"]} model: `image` (B, 3, H, W) float32 → `logits` (B, C, H, W) float32 |
| `model.json` | sidecar: classes, palette, preprocessing, precision, mIoU fp32 vs deployed, latency |

## Accuracy and speed (measured on this machine when the folder was made)

| | mIoU % ({m["images"]} val images, mode {m["mode"]}) | latency ms ({size}, onnxruntime CPU) |
|---|---:|---:|
| fp32 reference (PyTorch checkpoint) | {_pct(m["reference"])} | {lat["fp32_ort_ms"]:.1f} (fp32 ONNX) |
| deployed {d["precision"]} | {_pct(m["deployed"])} | {lat["deployed_ort_ms"]:.1f} |

mIoU drop: **{m["drop_points"]:.2f} points** (limit {m["limit_points"]:.2f});
speed-up vs fp32 onnxruntime: **{speed:.2f}×** on {lat["machine"]}.

## Run it

Preprocessing: RGB uint8 → float in 0..1 → subtract mean {pre.get("mean")} → divide by std {pre.get("std")}
→ NCHW; predict = argmax over C of `logits`; the full image at its own size (H, W dynamic).

```bash
zsplg-fast infer {d["folder_name"]} --input photo.jpg --out preds/ --overlays   # or a folder of images
```

```python
import numpy as np, onnxruntime as ort
from PIL import Image
sess = ort.InferenceSession("model.onnx", providers=["CPUExecutionProvider"])
x = np.asarray(Image.open("photo.jpg").convert("RGB"), np.float32) / 255.0
x = (x - np.array({pre.get("mean")}, np.float32)) / np.array({pre.get("std")}, np.float32)
label = sess.run(["logits"], {{"image": x.transpose(2, 0, 1)[None]}})[0][0].argmax(0).astype(np.uint8)
```

## TensorRT on a Jetson (or any NVIDIA GPU)

Build the engine on the device itself (plans are tied to the TensorRT version and the GPU):

```bash
{trtexec_command(sidecar)}
```

or, with zsplg-fast installed there: `zsplg-fast build model.onnx --precision {d["precision"]} --out engines/`
then `zsplg-fast infer . --backend trt ...`.
"""
