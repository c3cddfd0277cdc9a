#!/usr/bin/env bash
# GPU check for zsplg-fast: the shipped `zsplg-fast label` end to end (vit_b and vit_h + ViT-B-16, 32×32,
# 50 synthetic images each) against upstream SamAutomaticMaskGenerator + dense CLIP on the same images,
# at the default thresholds and at thresholds 0 (s/img steady state, masks/img, peak GPU memory, bf16 vs
# fp32 fidelity), and the exported decoder on every GPU runtime that imports (onnxruntime CUDA/TensorRT
# providers, TensorRT). Random weights. Finishes in under 10 minutes (one device call), wheels included.
#
# Needs: one NVIDIA GPU, python3 with PyTorch CUDA + torchvision (numpy, pillow, onnx, onnxruntime).
# The project's pure-Python dependencies that such a machine usually lacks (segment-anything,
# open_clip_torch, ftfy, wcwidth) travel as wheels beside the tree: on a machine with the package index,
#
#   bash bench/gpu_wheels.sh            # downloads them into .whl/ (git-ignored), for CPython 3.12
#
# then copy the tree (with .whl/) to the GPU machine and run, from anywhere:
#
#   OUT=/some/dir bash bench/gpu_check.sh          # the real check (GPU)
#   bash bench/gpu_check.sh --smoke                # CPU code-path check, ~1 min
#   bash bench/gpu_check.sh --only env,amg:vit_b   # some sections
#   bash bench/gpu_check.sh --only label:sam2.1_hiera_l,sam2:sam2.1_hiera_l,sam2:sam2.1_hiera_t  # SAM 2.1
#
# Results go to $OUT (never into the repo; without OUT, a fresh temp folder).
# Wheels in ${WHEELS:-<repo>/.whl} are installed with --no-deps --no-index into ${SITE:-/tmp/site}, which
# is put on PYTHONPATH with the repo. Missing pure-Python deps that open_clip and our config import but
# never use here (tqdm, regex, huggingface_hub, safetensors, timm, yaml) are replaced by inert stubs, listed
# in the JSON. Results: $OUT/gpu_check.json and $OUT/gpu_check.md, rewritten after
# every section; the table is printed at the end. Extra args go to bench/gpu_check.py.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${PYTHON:-python3}"
SITE="${SITE:-/tmp/site}"
WHEELS="${WHEELS:-${ROOT}/.whl}"
if compgen -G "${WHEELS}/*.whl" >/dev/null; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target "$SITE" "${WHEELS}"/*.whl
    echo "[gpu_check] installed $(ls "${WHEELS}"/*.whl | wc -l) wheels from ${WHEELS} into ${SITE}"
fi
export PYTHONPATH="${ROOT}:${SITE}${PYTHONPATH:+:${PYTHONPATH}}"
export HF_HUB_OFFLINE=1
export MALLOC_MMAP_MAX_="${MALLOC_MMAP_MAX_:-0}" MALLOC_TRIM_THRESHOLD_="${MALLOC_TRIM_THRESHOLD_:-100000000000}" \
    MALLOC_TOP_PAD_="${MALLOC_TOP_PAD_:-1000000000}"
cd "$ROOT"
exec timeout 580 "$PY" bench/gpu_check.py "$@"
