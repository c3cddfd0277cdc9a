"""Issue 21.4: labeled data with no trainable pixel (every labeled mask all ignore, 255) is refused at
preflight with exit 2, before a model is built; it used to train with loss 0 and write final.pth."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from zsplg_fast.cli.main import main
from zsplg_fast.config.train import TrainConfig
from zsplg_fast.data.labels import read_label, write_label
from zsplg_fast.data.sources import open_source
from zsplg_fast.data.synthetic import generate_dataset
from zsplg_fast.errors import DatasetError
from zsplg_fast.train.supervised import train_supervised
from zsplg_fast.train.unimatch import train_unimatch


@pytest.fixture(scope="module")
def ignored(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """12 images of 64 px; the 4 labeled masks are all 255 (val masks keep their classes)."""
    root = tmp_path_factory.mktemp("ignored") / "ds"
    generate_dataset(root, 12, num_classes=2, seed=1, size=64, val_fraction=0.25, labeled_fraction=0.5)
    for s in open_source(f"synthetic:{root}", "labeled").samples:
        write_label(s.label_path, np.full_like(read_label(s.label_path), 255))
    return root


@pytest.mark.parametrize("stage", ["supervised", "unimatch"])
def test_all_ignore_labeled_masks_are_refused_before_training(
    ignored: Path, tiny_cfg: Callable[..., TrainConfig], tmp_path: Path, stage: str
) -> None:
    cfg = tiny_cfg(
        **{"data.source": f"synthetic:{ignored}", f"{stage}.max_iters": 2, "supervised.batch_size": 2}
    )
    train = train_supervised if stage == "supervised" else train_unimatch
    n = len(open_source(f"synthetic:{ignored}", "labeled").samples)
    with pytest.raises(DatasetError, match=rf"all {n} labeled masks are ignore \(255\)"):
        train(cfg, tmp_path / "run")
    assert not (tmp_path / "run" / "final.pth").exists()
    assert not (tmp_path / "run" / "latest.pth").exists()


def test_cli_exit_2_and_one_trainable_mask_is_enough(
    ignored: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sets = [
        "train.data.crop_size=64",
        "train.data.workers=0",
        f"train.data.preflight_cache={tmp_path / 'pf'}",
        "train.supervised.batch_size=2",
        "train.supervised.max_iters=1",
        "train.eval.every_epochs=0",
        "train.run.device=cpu",
    ]
    argv = ["train", "--data", f"synthetic:{ignored}", "--backbone", "tiny", "--labeled-only"]
    argv += [a for kv in sets for a in ("--set", kv)]
    with pytest.raises(SystemExit) as done:
        main([*argv, "--out", str(tmp_path / "a")])
    err = " ".join(capsys.readouterr().err.split())
    assert done.value.code == 2 and "DatasetError" in err and "labeled masks are ignore (255)" in err, err
    assert not (tmp_path / "a" / "final.pth").exists()
    # one labeled mask with a class pixel: trains (a partly ignored set is a normal dataset)
    one = tmp_path / "one"
    import shutil

    shutil.copytree(ignored, one)
    first = open_source(f"synthetic:{one}", "labeled").samples[0].label_path
    lab = read_label(first)
    lab[:8, :8] = 1
    write_label(first, lab)
    argv[2] = f"synthetic:{one}"
    with pytest.raises(SystemExit) as done:
        main([*argv, "--out", str(tmp_path / "b")])
    assert done.value.code in (0, None), capsys.readouterr().err
    assert (tmp_path / "b" / "final.pth").is_file()
