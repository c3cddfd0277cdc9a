"""Checkpoints load with weights_only=True: a pickle that would run code is refused before it runs;
our own checkpoints (segmenter, training state with numpy RNG state, toy backbone) still load."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from zsplg_fast.errors import ModelFileError


class _WritesAFile:
    """Unpickling this calls ``open(target, "w")``: the file appears only if the pickle runs."""

    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return (open, (str(self.target), "w"))


@pytest.mark.parametrize("legacy", [False, True])
def test_a_code_running_pickle_is_refused_and_never_runs(tmp_path: Path, legacy: bool) -> None:
    from zsplg_fast.models.segmenter import build_segmenter, load_backbone_weights, load_checkpoint

    target = tmp_path / "pwned.txt"
    evil = tmp_path / "shared.pth"
    obj = {"state_dict": {"w": torch.zeros(2)}, "format": "x", "payload": _WritesAFile(target)}
    torch.save(obj, evil, _use_new_zipfile_serialization=not legacy)
    with pytest.raises(ModelFileError, match=r"refused.*(io\.open|builtins\.open)") as err:
        load_checkpoint(evil)
    assert str(evil) in str(err.value) and "weights_only" in str(err.value)
    with pytest.raises(ModelFileError, match="refused"):
        load_backbone_weights(build_segmenter("tiny", 2).backbone, evil)
    assert not target.exists()


def test_training_state_with_numpy_rng_loads(tmp_path: Path) -> None:
    from zsplg_fast.models.safe_load import load_torch_file
    from zsplg_fast.models.segmenter import build_segmenter, save_checkpoint
    from zsplg_fast.train.runtime import rng_state

    model = build_segmenter("tiny", 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model.train()(torch.zeros(2, 3, 32, 32)).sum().backward()
    opt.step()
    path = tmp_path / "latest.pth"
    save_checkpoint(path, model, ["a", "b"], {"train_state": {"rng": [rng_state()], "opt": opt.state_dict()}})
    obj = load_torch_file(path)
    assert obj["class_names"] == ["a", "b"]
    assert obj["train_state"]["rng"][0]["numpy"][1].dtype.name == "uint32"


def test_toy_backbone_loads() -> None:
    from zsplg_fast.models.segmenter import build_segmenter, load_backbone_weights

    report = load_backbone_weights(build_segmenter("tiny", 2).backbone, "toy")
    assert report["loaded"]


def test_an_unsafe_clip_or_sam_checkpoint_names_the_refused_global(
    tmp_path: Path, clip_config_dir: Path
) -> None:
    """open_clip and the SAM reader call torch.load(weights_only=True) themselves: the message gives the
    complete reason (the global the file asks for), not the first line of torch's advice cut mid-sentence."""
    from zsplg_fast.models import build_clip
    from zsplg_fast.models.sam import read_sam_state_dict

    target = tmp_path / "pwned.txt"
    evil = tmp_path / "clip.pt"
    torch.save({"state_dict": {"w": torch.zeros(2)}, "payload": _WritesAFile(target)}, evil)
    for load in (lambda: build_clip("zsplg-test-vit", evil), lambda: read_sam_state_dict(evil)):
        with pytest.raises(ModelFileError) as err:
            load()
        msg = str(err.value)
        assert msg.startswith(str(evil)) and "\n" not in msg and "\x1b" not in msg
        assert re.search(r"refused to load this .*: unpickling it would call (io\.open|builtins\.open)", msg)
        assert "Weights only load failed" not in msg and msg.endswith("(tensors, numbers, strings)")
    assert not target.exists()
