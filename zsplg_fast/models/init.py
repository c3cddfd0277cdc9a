"""Deterministic random initialisation, so "random-init" weights are the same in every process.

Benchmarks, exports and label runs without checkpoints then agree with each other (an ONNX artifact
exported from random weights matches the torch model built later from the same config).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

RANDOM_INIT_SEED = 0


@contextlib.contextmanager
def deterministic_init(seed: int = RANDOM_INIT_SEED) -> Iterator[None]:
    """Seed torch's CPU generator inside the block and restore the caller's RNG state afterwards."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield
