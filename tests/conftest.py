"""Shared fixtures: a tiny open_clip config registered once, and small synthetic datasets."""

from __future__ import annotations

import json
import os
import warnings

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

# `make test` runs the suite on 2 pytest-xdist workers (`-n 2 --dist loadgroup --no-loadscope-reorder`).
# The unit of work is a test module, except in the folders whose conftest builds costly session fixtures
# (every spec exported, a trained and deployed segmenter, a bench run, toy labels) or that share a cache
# folder (hypothesis' under the temp folder): their tests share one worker, so each fixture is built
# once. Units are handed out in collection order, so the longest go first (measured with
# --durations=0; the demo alone is a third of the suite) and the last unit to start is a short one.
SHARED_SESSION_DIRS = frozenset({"bench", "deploy", "engines", "export", "fuzz", "review"})
LONGEST_FIRST = ("toy/test_demo_quality.py", "bench", "export", "labeling/test_ray_exec.py")


def _xdist_unit(rel: str) -> str:
    """``rel``: a test file relative to tests/ → the xdist group its tests run in."""
    top = rel.split("/", 1)[0]
    return top if top in SHARED_SESSION_DIRS else rel


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook, which appends the group to each node id
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Under ``--dist loadgroup``: an ``xdist_group`` per unit (see above), the longest units first."""
    if config.getoption("dist", "no") != "loadgroup":
        return
    tests_dir = config.rootpath / "tests"
    rank = {u: i for i, u in enumerate(LONGEST_FIRST)}
    units = {}
    for item in items:
        unit = _xdist_unit(item.path.relative_to(tests_dir).as_posix())
        units[item.nodeid] = unit
        item.add_marker(pytest.mark.xdist_group(unit))
    items.sort(key=lambda it: rank.get(units[it.nodeid], len(rank)))  # stable: collection order within


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
