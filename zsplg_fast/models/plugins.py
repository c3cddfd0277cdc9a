"""Model plugins: modules that register extra SAM variants / CLIP models when a name is not yet known.

The toy world's shipped models register from ``zsplg_fast.toy.registry``; the models layer only knows
the module path, imports it on first need, and calls its ``register()``.
"""

from __future__ import annotations

import importlib

PLUGINS: list[str] = ["zsplg_fast.toy.registry"]
_loaded: set[str] = set()


def load_plugins() -> None:
    """Import every plugin module once and call its ``register()`` (idempotent)."""
    for mod in PLUGINS:
        if mod in _loaded:
            continue
        importlib.import_module(mod).register()
        _loaded.add(mod)  # after success: a failed import is retried, not silently skipped
