"""Moved to :mod:`zsplg_runtime.labels` (the torch-free runtime distribution, ``runtime/``): this name is
that same module object, so imports, attributes and monkeypatches of either name act on one module."""

import sys

import zsplg_runtime.labels as _impl

sys.modules[__name__] = _impl
