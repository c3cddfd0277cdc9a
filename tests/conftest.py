"""Shared fixtures: a tiny open_clip config registered once, and small synthetic datasets."""

from __future__ import annotations

import json
import os
import warnings
from typing import Any

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

# `make test` runs the suite on 2 pytest-xdist workers (`-n 2 --dist loadgroup --no-loadscope-reorder`).
# The unit of work is a test module, except in the folders whose conftest builds costly session fixtures
# (every spec exported, a trained and deployed segmenter, a bench run, toy labels) or that share a cache
# folder (hypothesis' under the temp folder): their tests share one worker, so each fixture is built
# once. Units are handed out in collection order, so the longest go first (measured with
# --durations=0; the demo alone is a third of the suite) and the last unit to start is a short one.
# tests/toy is one unit too: xdist gives a worker a second unit at once when its first has at most 2
# tests (the demo module has 2), which would queue another long unit behind the demo.
UNIT_DIRS = frozenset({"bench", "deploy", "engines", "export", "fuzz", "review", "toy"})
LONGEST_FIRST = ("toy", "bench", "export", "labeling/test_ray_exec.py")


def _xdist_unit(nodeid: str) -> str:
    """A test's node id (``tests/<folder>/<file>::<name>``) → the unit of work it runs in."""
    rel = nodeid.split("::", 1)[0].removeprefix("tests/")
    top = rel.split("/", 1)[0]
    return top if top in UNIT_DIRS else rel


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """``--dist loadgroup``: xdist's load-scope scheduler with our units as scopes. (xdist 3.8 marks a
    group by rewriting ``item._nodeid``, which pytest 9 no longer reads: its own groups do not form.)"""
    if config.getoption("dist") != "loadgroup":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class UnitScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return _xdist_unit(nodeid)

    return UnitScheduling(config, log)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Under ``--dist loadgroup`` the longest units first (units are handed out in collection order).

    Workers collect with ``dist`` reset to "no" and ``loadgroup`` set (xdist's remote.setup_config)."""
    if not (config.getoption("loadgroup", False) or config.getoption("dist", "no") == "loadgroup"):
        return
    rank = {u: i for i, u in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda it: rank.get(_xdist_unit(it.nodeid), len(rank)))  # stable: order kept within


@pytest.fixture(scope="session", autouse=True)
def _one_thread_per_worker() -> None:
    """Under xdist each of the 2 workers has a core: torch on one thread (the serial suite's state too,
    where tests/bench/conftest.py, the first folder, sets it for the rest of the session)."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        import torch

        torch.set_num_threads(1)


@pytest.fixture(scope="session", autouse=True)
def _hash_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    """The artifact hash cache (utils/integrity) in a temp folder, never the user's ~/.cache."""
    os.environ["ZSPLG_FAST_CACHE_DIR"] = str(tmp_path_factory.mktemp("hash-cache"))


TINY_CLIP = "tiny-clip-test"
TINY_CLIP_CFG = {
    "embed_dim": 64,
    "vision_cfg": {"image_size": 64, "layers": 2, "width": 64, "patch_size": 16, "head_width": 32},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}


@pytest.fixture(scope="session")
def tiny_clip_name(tmp_path_factory: pytest.TempPathFactory) -> str:
    """Register the tiny open_clip config (ViT 2×64, patch 16; text 2×64) and return its name."""
    from zsplg_fast.models import open_clip_config_builder, register_clip_model

    path = tmp_path_factory.mktemp("clip-config") / f"{TINY_CLIP}.json"
    path.write_text(json.dumps(TINY_CLIP_CFG))
    register_clip_model(TINY_CLIP, open_clip_config_builder(path))
    warnings.filterwarnings("ignore", message=".*RANDOM.*")
    return TINY_CLIP


TOY_CI = os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "zsplg_fast", "configs", "toy_ci.yaml"
)


@pytest.fixture(scope="session")
def sam2_tiny_ckpt(tmp_path_factory: pytest.TempPathFactory):  # -> Path
    """A random SAM 2 ``sam2_tiny`` (Hiera embed 32, 256 px; seed 5) saved in the official ``{"model": sd}``
    .pt layout, shared by the SAM 2 label / pipeline / review tests. Skips without the [sam2] extra."""
    pytest.importorskip("sam2", reason="the [sam2] extra is not installed")
    import torch

    from zsplg_fast.models import build_sam, save_sam_checkpoint

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.manual_seed(5)
        return save_sam_checkpoint(build_sam("sam2_tiny"), tmp_path_factory.mktemp("sam2") / "sam2_tiny.pt")


@pytest.fixture(scope="session")
def sam2_toy_engines(sam2_tiny_ckpt, tmp_path_factory: pytest.TempPathFactory):  # -> Path
    """What ``label --backend ort`` runs for ``--sam sam2_tiny --clip toy`` (toy_ci.yaml), exported once
    through the CLI: ``sam2_encoder`` + ``sam2_decoder_batched`` (legacy exporter: 6 s, not 28; the same
    parity) and the toy ``clip_dense``."""
    from typer.testing import CliRunner

    from zsplg_fast.cli.main import app

    out = tmp_path_factory.mktemp("sam2-engines")
    sam = ["--sam", "sam2_tiny", "--sam-checkpoint", str(sam2_tiny_ckpt), "--set", "export.exporter=legacy"]
    sam += ["--only", "sam2_encoder", "--only", "sam2_decoder_batched"]
    for what, extra in (("sam", sam), ("clip", [])):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            res = CliRunner().invoke(app, ["export", what, "--config", TOY_CI, *extra, "--out", str(out)])
        assert res.exit_code == 0, res.output
    return out
