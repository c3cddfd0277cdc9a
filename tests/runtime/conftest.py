"""A deploy-shaped folder made in milliseconds (no training): a 1x1-convolution ONNX segmenter and its
sidecar, for the runtime's own tests."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

CLASSES = ["background", "red", "green"]


def write_tiny_deploy(folder: Path, seed: int = 0) -> Path:
    """``folder/model.onnx`` (image (B, 3, H, W) float32 → logits (B, 3, H, W): a fixed 1x1 convolution),
    ``folder/model.json`` (the sidecar a deploy writes: IO, preprocessing, classes, palette, precision,
    deploy mode) and ``folder/img.png`` (a 20x24 RGB image)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    w = rng.normal(size=(3, 3, 1, 1)).astype(np.float32)
    b = rng.normal(size=(3,)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Conv", ["image", "w", "b"], ["logits"])],
        "tiny",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 3, "height", "width"])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 3, "height", "width"])],
        [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(folder / "model.onnx"))
    side = {
        "sidecar_version": 1,
        "name": "segmenter",
        "precision": "fp32",
        "inputs": [{"name": "image", "dtype": "float32", "shape": ["batch", 3, "height", "width"]}],
        "outputs": [{"name": "logits", "dtype": "float32", "shape": ["batch", 3, "height", "width"]}],
        "profiles": {"batch": [1, 1, 4], "height": [16, 64, 128], "width": [16, 64, 128]},
        "preprocessing": {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225], "scale": "0..1"},
        "class_names": CLASSES,
        "palette": [[0, 0, 0], [200, 0, 0], [0, 200, 0]],
        "versions": {"onnxruntime": "1.32.0"},
        "deploy": {"precision": "fp32", "miou": {"mode": "original", "window": 321}},
    }
    (folder / "model.json").write_text(json.dumps(side))
    img = rng.integers(0, 256, size=(20, 24, 3), dtype=np.uint8)
    Image.fromarray(img).save(folder / "img.png")
    return folder


@pytest.fixture
def tiny_deploy(tmp_path: Path) -> Path:
    """See :func:`write_tiny_deploy`."""
    return write_tiny_deploy(tmp_path / "deploy")
