"""The short README of a deploy folder: what is in it, how to run it, how to build it with TensorRT (the
``zsplg-fast build`` and equivalent ``trtexec`` lines, also written as ``build_tensorrt.sh``), Triton."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def _shapes(sidecar: Mapping[str, Any]) -> dict[str, Any]:
    from zsplg_runtime.tensors import TensorSpec, plan_profiles, resolve_ranges

    return plan_profiles([TensorSpec.from_dict(d) for d in sidecar["inputs"]], resolve_ranges(sidecar))


def plan_file(sidecar: Mapping[str, Any]) -> str:
    """The plan the trtexec line writes: ``model.<precision>.plan`` (what ``zsplg-runtime --backend trt``
    opens; its sidecar is :func:`plan_sidecar`, ``model.<precision>.json``)."""
    return f"model.{sidecar['precision']}.plan"


def plan_sidecar(sidecar: Mapping[str, Any]) -> dict[str, Any]:
    """The sidecar of the plan that ``trtexec`` builds on the target (``model.<precision>.json``): the
    I/O, the per-input min/opt/max shapes the trtexec line builds with, preprocessing, classes and
    palette. It records no TensorRT version or GPU (``built_on_target``): the plan is built where it
    runs, and TensorRT refuses a plan from another version or GPU itself."""
    from zsplg_runtime.sidecar import SIDECAR_VERSION

    return {
        "sidecar_version": SIDECAR_VERSION,
        "kind": "tensorrt",
        "name": str(sidecar.get("name", "segmenter")),
        "file": plan_file(sidecar),
        "precision": sidecar["precision"],
        "strongly_typed": True,
        "built_on_target": True,
        "inputs": sidecar["inputs"],
        "outputs": sidecar["outputs"],
        "profiles": {k: [list(s) for s in v] for k, v in _shapes(sidecar).items()},
        "onnx": {"path": "model.onnx", "sha256": sidecar.get("sha256")},
        "rebuild_command": trtexec_command(sidecar),
        **{k: sidecar[k] for k in ("preprocessing", "class_names", "palette", "deploy") if k in sidecar},
    }


def build_command(sidecar: Mapping[str, Any], model: str = "model.onnx") -> str:
    """The ``zsplg-fast build`` line for this folder's model (its precision and the sidecar's profiles)."""
    profiles = "".join(f" --profile {k}={v[0]}:{v[1]}:{v[2]}" for k, v in sidecar.get("profiles", {}).items())
    return f"zsplg-fast build {model} --precision {sidecar['precision']} --out engines{profiles}"


def trtexec_command(sidecar: Mapping[str, Any], model: str = "model.onnx") -> str:
    """The equivalent ``trtexec`` line: strongly typed (the precision is the graph's: no --fp16/--int8;
    required on TensorRT 10.x, the default on 11.x), min/opt/max shapes from the sidecar's profiles."""
    shapes = _shapes(sidecar)
    flags = " ".join(
        f"--{k}Shapes=" + ",".join(f"{n}:{'x'.join(str(d) for d in s[i])}" for n, s in shapes.items())
        for i, k in enumerate(("min", "opt", "max"))
    )
    return f"trtexec --onnx={model} --stronglyTyped {flags} --saveEngine={plan_file(sidecar)}"


def build_script(sidecar: Mapping[str, Any]) -> str:
    """``build_tensorrt.sh``: build the plan on the target (plans are tied to its GPU and TensorRT)."""
    return f"""#!/usr/bin/env bash
# Build the TensorRT plan of model.onnx ON THE TARGET (a plan is tied to its GPU and TensorRT version).
# The precision ({sidecar["precision"]}) is in the ONNX graph: strongly typed build, no precision flags.
set -euo pipefail
cd "$(dirname "$0")"
if command -v zsplg-fast >/dev/null; then
  {build_command(sidecar)}
else
  {trtexec_command(sidecar)}
fi
"""


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
    p = d["precision"]
    return f"""# Deployed segmenter ({d["precision"]})

DeepLabV3+ exported from `{d["checkpoint"]}` (sha256 `{str(d["checkpoint_sha256"])[:16]}…`),
{len(names)} classes: {", ".join(names)}.

| file | what |
|---|---|
| `model.onnx` | {d["precision"]} model: `image` (B, 3, H, W) float32 → `logits` (B, C, H, W) float32 |
| `model.json` | sidecar: classes, palette, preprocessing, precision, mIoU fp32 vs deployed, latency |
| `build_tensorrt.sh` | builds the TensorRT plan on the target (strongly typed, shapes from the sidecar) |
| `model.{p}.json` | sidecar of that plan (`model.{p}.plan`): what `zsplg-runtime --backend trt` reads |
| `triton/` | Triton model repository (onnxruntime backend) |

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
pip install ZSPLG_FAST_CHECKOUT/runtime    # zsplg-fast-runtime: numpy, pillow, onnxruntime; no PyTorch
zsplg-runtime infer {d["folder_name"]} --input photo.jpg --out preds/ --overlays   # or a folder of images
```

(`zsplg-fast infer` takes the same options.)

```python
import numpy as np, onnxruntime as ort
from PIL import Image
sess = ort.InferenceSession("model.onnx", providers=["CPUExecutionProvider"])
x = np.asarray(Image.open("photo.jpg").convert("RGB"), np.float32) / 255.0
x = (x - np.array({pre.get("mean")}, np.float32)) / np.array({pre.get("std")}, np.float32)
label = sess.run(["logits"], {{"image": x.transpose(2, 0, 1)[None]}})[0][0].argmax(0).astype(np.uint8)
```

## TensorRT on a Jetson (or any NVIDIA GPU)

Build the engine on the device itself (plans are tied to the TensorRT version and the GPU); the build is
strongly typed: the {d["precision"]} precision is in `model.onnx`, so no precision flags
(`build_tensorrt.sh` runs the first line, or the second without zsplg-fast):

```bash
{build_command(sidecar)}
{trtexec_command(sidecar)}
```

then `zsplg-runtime infer . --backend trt --input ... --out ...` (no PyTorch; it reads the plan's sidecar
`model.{d["precision"]}.json`, shipped in this folder) or `zsplg-fast infer . --backend trt ...`.
TensorRT 10.x (JetPack 6: 10.3) and 11.x both build it; `--stronglyTyped` is required on 10.x and the
default on 11.x.

## Triton Inference Server

`triton/segmenter/config.pbtxt` + `triton/segmenter/1/model.onnx` is a model repository for Triton's
onnxruntime backend (batch up to the profile's max, H and W variable) with the dynamic batcher on
(`dynamic_batching`: preferred batch sizes, 500 µs queue delay). Triton runs the network only: clients
apply the preprocessing above (`triton/README.md` repeats it).

```bash
tritonserver --model-repository=$PWD/triton
```
"""
