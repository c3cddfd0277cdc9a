"""Edge deployment of the segmenter: ``deploy`` (export → fp16 / INT8 → measured mIoU cost → folder)
and ``infer`` (run a deploy folder on images).

Layer: above ``bench`` (it times with :mod:`zsplg_fast.bench.timing` and predicts with
:mod:`zsplg_fast.bench.segmenter`, the code the benchmark times), below ``cli``.
"""

from __future__ import annotations

from zsplg_fast.deploy.build import deploy
from zsplg_fast.deploy.infer import infer

__all__ = ["deploy", "infer"]
