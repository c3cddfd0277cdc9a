"""Shipped toy weights: manifest, sha256 checks, and registration as SAM ``toy`` and CLIP ``toy``.

The weights live in ``zsplg_fast/toy/weights/`` (package data); ``zsplg_fast/toy/manifest.json`` records
each file's sha256, the command that made it, seed, steps, training time, final training log and fp16 parity.
Loading always checks the sha256 first, so a corrupted or swapped file is a ``CheckpointError``.

This module sits at the models layer: it imports ``zsplg_fast.models`` builders, never the CLI or the
pipelines, and models never import it eagerly (call ``register()`` where models are built).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from zsplg_fast.errors import CheckpointError
from zsplg_fast.utils.io import sha256_file

PACKAGE_DIR = Path(__file__).resolve().parent
MANIFEST_NAME = "manifest.json"
TOY_NAME = "toy"  # SAM variant and CLIP model name


def read_manifest(root: Path = PACKAGE_DIR) -> dict[str, Any]:
    """The toy manifest (``{"models": {"sam": {...}, "clip": {...}}, ...}``) under ``root``."""
    path = root / MANIFEST_NAME
    if not path.is_file():
        raise CheckpointError(path, "toy manifest is missing; reinstall zsplg-fast (package data)")
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise CheckpointError(path, f"toy manifest is unreadable ({e}); reinstall zsplg-fast") from e


def verified_weights(kind: str, root: Path = PACKAGE_DIR) -> Path:
    """Path of the shipped weights of ``kind`` ('sam' | 'clip') after checking its sha256.

    Raises:
        CheckpointError: unknown kind, missing file, or sha256 mismatch (names the file and both hashes).
    """
    models = read_manifest(root).get("models", {})
    if kind not in models:
        raise CheckpointError(
            root / MANIFEST_NAME, f"no '{kind}' entry; known: {', '.join(models) or 'none'}"
        )
    entry = models[kind]
    path = root / entry["file"]
    if not path.is_file():
        raise CheckpointError(path, "shipped toy weights are missing; reinstall zsplg-fast (package data)")
    got = sha256_file(path)
    if got != entry["sha256"]:
        raise CheckpointError(
            path,
            f"sha256 {got[:16]}… does not match the manifest's {entry['sha256'][:16]}…; "
            "the file is corrupted or replaced, reinstall zsplg-fast",
        )
    return path


def toy_settings(root: Path = PACKAGE_DIR) -> dict[str, Any]:
    """Recommended label-time settings for the toy models (AMG thresholds, CLIP image size, GEM depth)."""
    return dict(read_manifest(root).get("recommended", {}))


def register() -> None:
    """Register SAM variant ``toy``, CLIP model ``toy`` and segmenter backbone weights ``toy`` (the
    ``tiny`` backbone pretrained by ``toy train-backbone``), all shipped and sha256-checked.

    Idempotent; cheap (no weights are read until a model is built).
    """
    from zsplg_fast.models.clip import register_clip_model
    from zsplg_fast.models.sam import register_sam_variant
    from zsplg_fast.models.segmenter import register_backbone_weights
    from zsplg_fast.toy.clip import build_clip_toy
    from zsplg_fast.toy.sam import build_sam_toy

    register_sam_variant(TOY_NAME, build_sam_toy, lambda: verified_weights("sam"))
    register_clip_model(TOY_NAME, build_clip_toy, lambda: verified_weights("clip"))
    register_backbone_weights(TOY_NAME, lambda: verified_weights("backbone"))
