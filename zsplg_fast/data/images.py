"""Moved to :mod:`zsplg_runtime.images` (the torch-free runtime distribution, ``runtime/``): this name is
that same module object, so imports, attributes and monkeypatches of either name act on one module."""

import sys

import zsplg_runtime.images as _impl

sys.modules[__name__] = _impl
