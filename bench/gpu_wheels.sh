#!/usr/bin/env bash
# Download the pure-Python wheels bench/gpu_check.sh installs on a bare PyTorch-CUDA machine (one that has
# torch, torchvision, numpy, pillow, onnx, onnxruntime, pyyaml, typer and rich, but not our model libraries)
# into .whl/ (git-ignored). Run it where the package index is reachable; then carry .whl/ with the tree.
# PYVER selects the GPU machine's CPython (default 3.12).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DEST="${WHEELS:-${ROOT}/.whl}"
PYVER="${PYVER:-3.12}"
mkdir -p "$DEST"
# versions: the ones this project is tested with (see pyproject.toml / the shared measurements)
python3 -m pip download -q --no-deps --only-binary=:all: --python-version "$PYVER" --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform any \
    -d "$DEST" "segment-anything==1.0" "open_clip_torch==3.3.0" "ftfy" "wcwidth"
ls -1 "$DEST"
