"""Process runtime for training: torchrun/DDP set-up (gloo on CPU, NCCL on CUDA), device, AMP, RNG state.

A plain ``python`` process is a world of one; under ``torchrun`` the env vars RANK / WORLD_SIZE /
LOCAL_RANK / MASTER_ADDR / MASTER_PORT select the process group (follows UniMatch
``util/dist_helper.py``, minus SLURM).
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from zsplg_fast.config.train import RunConfig
from zsplg_fast.errors import ConfigError

log = logging.getLogger("zsplg_fast.train")

AMP_DTYPES: dict[str, torch.dtype | None] = {"off": None, "fp16": torch.float16, "bf16": torch.bfloat16}
BACKENDS: dict[str, str] = {"cpu": "gloo", "cuda": "nccl"}


@dataclass
class Runtime:
    """Where this process runs. ``rank``/``world`` are 0/1 outside torchrun."""

    rank: int
    world: int
    local_rank: int
    device: torch.device
    amp_dtype: torch.dtype | None
    owns_group: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world > 1

    @property
    def cuda(self) -> bool:
        return self.device.type == "cuda"

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        """Mixed-precision context for forward passes (a no-op when AMP is off)."""
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    def gather(self, obj: Any) -> list[Any]:
        """Every rank's ``obj`` (a list of length ``world``) on every rank."""
        if not self.distributed:
            return [obj]
        out: list[Any] = [None] * self.world
        dist.all_gather_object(out, obj)
        return out

    def broadcast(self, obj: Any, src: int = 0) -> Any:
        """Rank ``src``'s ``obj`` on every rank."""
        if not self.distributed:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=src)
        return box[0]

    def all_mean(self, value: float) -> float:
        """Mean of a float over ranks."""
        if not self.distributed:
            return value
        t = torch.tensor([value], dtype=torch.float64, device=self.device)
        dist.all_reduce(t)
        return float(t.item()) / self.world

    def wrap(self, model: nn.Module) -> nn.Module:
        """To the device; under torchrun SyncBN (CUDA) then DDP (broadcast_buffers=False, as upstream)."""
        if self.distributed and self.cuda:
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        model = model.to(self.device)
        if not self.distributed:
            return model
        ids = [self.device.index] if self.cuda else None
        return nn.parallel.DistributedDataParallel(model, device_ids=ids, broadcast_buffers=False)

    def close(self) -> None:
        """Destroy the process group if this runtime created it."""
        if self.owns_group and dist.is_initialized():
            dist.destroy_process_group()
            self.owns_group = False


def _device(spec: str, local_rank: int) -> torch.device:
    if spec == "auto":
        spec = "cuda" if torch.cuda.is_available() else "cpu"
    if spec == "cuda":
        spec = f"cuda:{local_rank}"
    try:
        dev = torch.device(spec)
    except RuntimeError as e:
        raise ConfigError("train.run.device", spec, "not a torch device", "auto, cpu, cuda, cuda:N") from e
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("train.run.device", spec, "CUDA is not available here", "auto or cpu")
    if dev.type not in BACKENDS:
        raise ConfigError("train.run.device", spec, "unsupported device type", "auto, cpu, cuda, cuda:N")
    return dev


def setup_runtime(run: RunConfig) -> Runtime:
    """Read torchrun's env, pick the device, init the process group once, set threads and AMP."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if run.threads is not None:
        torch.set_num_threads(run.threads)
    device = _device(run.device, local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    amp = run.amp if run.amp != "auto" else ("bf16" if device.type == "cuda" else "off")
    owns = False
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(BACKENDS[device.type], rank=rank, world_size=world)
        owns = True
    return Runtime(rank, world, local_rank, device, AMP_DTYPES[amp], owns)


def seed_all(seed: int, rank: int = 0) -> None:
    """Seed python, numpy and torch (CPU and CUDA) from (seed, rank)."""
    s = seed * 1000 + rank
    random.seed(s)
    np.random.seed(s % 2**32)
    torch.manual_seed(s)


def rng_state() -> dict[str, Any]:
    """This process's python / numpy / torch (and CUDA) RNG states."""
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` captured."""
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put ``model`` in eval mode for the block and restore its previous mode after."""
    was = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was)


def make_scaler(rt: Runtime) -> torch.amp.GradScaler | None:
    """A GradScaler for fp16 on CUDA (bf16 and fp32 need none)."""
    if rt.cuda and rt.amp_dtype == torch.float16:
        return torch.amp.GradScaler("cuda")
    return None


def to_device(batch: Any, device: torch.device) -> list[Any]:
    """Move the tensors of a collated batch to ``device`` (other items unchanged)."""
    return [t.to(device, non_blocking=True) if isinstance(t, torch.Tensor) else t for t in batch]
