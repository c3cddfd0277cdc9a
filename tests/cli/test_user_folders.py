"""No command writes into a folder it did not make: each of label, unimatch, train, enhance, deploy,
infer, export, build, bench and run, pointed at a folder of the user's files (``--force`` where the
command has it), is refused with one line naming what is there (exit 2), and every file of the folder
is still there afterwards, byte for byte, with nothing added. All of them refuse before a model loads
(export loads a tiny segmenter), so the whole table runs in seconds."""

from __future__ import annotations

from pathlib import Path

import pytest

from zsplg_fast.cli.main import main

CONFIGS = Path(__file__).parents[2] / "zsplg_fast" / "configs"

USER_FILES = {
    "notes.txt": b"my notes\n",
    "sub/data.txt": b"1,2,3\n",
    "metrics.json": b'{"mine": true}\n',
    "best.pth": b"\x00my weights",
    "segmenter.onnx": b"my own model",
    "segmenter.json": b'{"author": "me"}\n',
    "segmenter.fp16.plan": b"my plan",
    "segmenter.fp16.json": b"{}\n",
}


def snapshot(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` (hidden ones too) → its bytes."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """``zsplg-fast ARGV`` in-process through ``main`` (its error printing and exit codes)."""
    with pytest.raises(SystemExit) as done:
        main(argv)
    captured = capsys.readouterr()
    return int(done.value.code or 0), captured.out, captured.err


@pytest.fixture(scope="module")
def segmenter_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from zsplg_fast.models.segmenter import build_segmenter, save_checkpoint

    path = tmp_path_factory.mktemp("ckpt") / "seg.pth"
    save_checkpoint(path, build_segmenter("tiny", 3), ["background", "a", "b"])
    return path


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real (tiny) dataset, so that a command that does not refuse goes on to write."""
    from zsplg_fast.data.synthetic import generate_dataset

    root = tmp_path_factory.mktemp("ds") / "ds"
    generate_dataset(root, 8, num_classes=2, seed=0, size=64, val_fraction=0.5, labeled_fraction=0.5)
    return root


def _argv(command: str, user: Path, tmp: Path, ckpt: Path, ds: Path) -> list[str]:
    data = f"synthetic:{ds}"
    onnx = tmp / "in" / "segmenter.onnx"
    onnx.parent.mkdir(exist_ok=True)
    onnx.write_bytes(b"onnx")
    (onnx.parent / "segmenter.json").write_text('{"name": "segmenter", "inputs": []}')
    tiny = ["--backbone", "tiny", "--set", "train.run.device=cpu", "--set", "train.eval.every_epochs=0"]
    for k in ("unimatch", "supervised"):
        tiny += ["--set", f"train.{k}.batch_size=2", "--set", f"train.{k}.max_iters=1"]
    table = {
        "label": ["label", "--data", data, "--classes", "auto", "--sam", "toy", "--clip", "toy"],
        "unimatch": ["unimatch", "--config", "tiny", "--data", data, *tiny],
        "train": ["train", "--config", "tiny", "--data", data, "--labeled-only", *tiny],
        "enhance": ["enhance", "--checkpoint", str(ckpt), "--data", data, "--fallback", "ignore"],
        "deploy": ["deploy", "--checkpoint", str(ckpt), "--precision", "fp32", "--val", data, "--force"],
        "infer": ["infer", str(tmp / "a-deploy-folder"), "--input", str(tmp), "--force"],
        "export": ["export", "segmenter", "--segmenter-checkpoint", str(ckpt), "--force"],
        "build": ["build", str(onnx), "--precision", "fp16", "--force"],
        "bench": ["bench", "--components", "segmenter", "--backends", "torch", "--force"],
        "run": ["run", str(CONFIGS / "toy_ci.yaml"), "--data", data],
    }
    return [*table[command], "--out", str(user)]


@pytest.mark.parametrize(
    "command",
    ["label", "unimatch", "train", "enhance", "deploy", "infer", "export", "build", "bench", "run"],
)
def test_a_folder_of_the_users_files_is_never_written(
    command: str,
    tmp_path: Path,
    segmenter_ckpt: Path,
    dataset: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    user = tmp_path / "mine"
    for name, data in USER_FILES.items():
        (user / name).parent.mkdir(parents=True, exist_ok=True)
        (user / name).write_bytes(data)
    before = snapshot(user)
    code, _, err = run_cli(_argv(command, user, tmp_path, segmenter_ckpt, dataset), capsys)
    assert snapshot(user) == before  # every file byte for byte, and nothing added
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: OutputExistsError"), err
    assert str(user) in lines[0] and "Traceback" not in err
    if command in ("export", "build"):  # shared artifact folders: the clashing file is named
        assert "not written by zsplg-fast" in lines[0]
    else:
        assert "'best.pth', 'metrics.json', 'notes.txt' … (8 entries)" in lines[0]
