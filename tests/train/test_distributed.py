"""torchrun: two CPU processes with gloo train UniMatch for a few steps through the CLI (DDP)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import torch


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_torchrun_two_cpu_processes_gloo(synth: Path, tmp_path: Path) -> None:
    out = tmp_path / "ddp"
    sets = {
        "train.data.crop_size": 64,
        "train.data.workers": 0,
        "train.data.preflight_cache": str(tmp_path / "preflight"),
        "train.model.backbone": "tiny",
        "train.unimatch.batch_size": 2,
        "train.unimatch.max_iters": 3,
        "train.unimatch.fusion": "online",
        "train.eval.every_epochs": 0,
        "train.run.device": "cpu",
        "train.run.threads": 1,
    }
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nnodes",
        "1",
        "--nproc_per_node",
        "2",
        "--master_addr",
        "127.0.0.1",
        "--master_port",
        str(free_port()),
        "-m",
        "zsplg_fast.cli.main",
        "unimatch",
        "--data",
        f"synthetic:{synth}",
        "--zero-shot",
        str(synth / "SegmentationClass"),
        "--out",
        str(out),
        *[a for k, v in sets.items() for a in ("--set", f"{k}={v}")],
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["complete"] and metrics["iterations"] == 3
    assert 0.0 <= metrics["miou"] <= 1.0
    state = torch.load(out / "latest.pth", map_location="cpu", weights_only=False)["train_state"]
    assert state["world"] == 2 and len(state["rng"]) == 2  # both ranks' RNG states kept for resume
    # each rank is seeded apart (its fp dropout differs), and each state is stored
    assert not torch.equal(state["rng"][0]["torch"], state["rng"][1]["torch"])
