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
# SAM 2.1 sections (--only label:sam2.1_hiera_l,sam2:sam2.1_hiera_l,sam2:sam2.1_hiera_t): the [sam2] extra and
# its pure-Python needs. sam2 1.1.0, antlr4-python3-runtime 4.9.3 (hydra's parser) and iopath are sdists:
# `pip wheel` builds them into py3-none-any wheels (sam2 without its CUDA extension, which AMG does not use,
# against a local torch when there is one) and takes the wheels of the others as they are
python3 -m pip wheel -q --no-deps -w "$DEST" "hydra-core==1.3.*" "omegaconf==2.3.*" \
    "antlr4-python3-runtime==4.9.3" "iopath==0.1.10" "portalocker"
if python3 -c "import torch" 2>/dev/null; then NOISO=--no-build-isolation; else NOISO=; fi
SAM2_BUILD_CUDA=0 python3 -m pip wheel -q --no-deps ${NOISO} -w "$DEST" "sam2==1.1.0"
ls -1 "$DEST"
