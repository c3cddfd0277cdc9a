#!/usr/bin/env bash
# GPU check for zsplg-fast: AMG (vit_b, vit_h, 32×32) upstream vs ours (fp32, bf16, bf16 + torch.compile),
# GEM dense CLIP ViT-B-16 at 448 (fp32 vs bf16), and bf16-vs-fp32 fidelity. Random weights. < 6 minutes.
#
# Needs: one NVIDIA GPU (H200 class), python3 with PyTorch CUDA + torchvision (numpy, pillow).
# No TensorRT / onnxruntime-gpu needed. segment-anything and open_clip_torch are NOT expected to be
# installed: carry their wheels and unpack them without dependencies into /tmp/site, e.g.
#
#   pip install --no-deps --target /tmp/site segment_anything-1.0-py3-none-any.whl \
#       open_clip_torch-3.3.0-py3-none-any.whl
#
# Then, from the repository root (the repo itself is put on PYTHONPATH by this script):
#
#   OUT=/some/dir PYTHONPATH=/tmp/site bash bench/gpu_check.sh        # the real check (GPU)
#   bash bench/gpu_check.sh --smoke                                    # CPU code-path check, ~1 min
#
# /tmp/site is added to PYTHONPATH by this script too. Missing pure-Python deps that open_clip and our
# config module import but never use here (ftfy, regex, tqdm, huggingface_hub, safetensors, timm, yaml)
# are replaced by inert stubs, listed in the JSON. Result: $OUT/gpu_check.json (./gpu_check.json if
# OUT is unset). Each section runs in its own process under a time cap (total budget 330 s); a section
# that fails or times out is recorded and the others still run. Extra args go to bench/gpu_check.py.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export PYTHONPATH="${ROOT}:/tmp/site${PYTHONPATH:+:${PYTHONPATH}}"
export HF_HUB_OFFLINE=1
export MALLOC_MMAP_MAX_="${MALLOC_MMAP_MAX_:-0}" MALLOC_TRIM_THRESHOLD_="${MALLOC_TRIM_THRESHOLD_:-100000000000}" \
    MALLOC_TOP_PAD_="${MALLOC_TOP_PAD_:-1000000000}"
cd "$ROOT"
exec timeout 355 "${PYTHON:-python3}" bench/gpu_check.py "$@"
