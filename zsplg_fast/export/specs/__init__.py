"""Export spec registry: one small module per artifact, registered here by name.

``SPECS[name].bind(model, **options)`` gives a :class:`Prepared` for
:func:`zsplg_fast.export.onnx.export_onnx`.
Families group specs by the model they consume (``sam``, ``sam2``, ``clip``, ``segmenter``).
"""

from __future__ import annotations

import difflib

from zsplg_fast.errors import ConfigError
from zsplg_fast.export.specs.base import ExportSpec, Prepared, check_validation_inputs
from zsplg_fast.export.specs.clip_dense import CLIP_DENSE
from zsplg_fast.export.specs.clip_text import CLIP_TEXT
from zsplg_fast.export.specs.sam2_decoder import SAM2_DECODER, SAM2_DECODER_BATCHED
from zsplg_fast.export.specs.sam2_encoder import SAM2_ENCODER
from zsplg_fast.export.specs.sam_decoder import SAM_DECODER
from zsplg_fast.export.specs.sam_decoder_batched import SAM_DECODER_BATCHED
from zsplg_fast.export.specs.sam_decoder_shared import SAM_DECODER_IMAGE, SAM_DECODER_SHARED
from zsplg_fast.export.specs.sam_encoder import SAM_ENCODER, SAM_ENCODER_PREPROCESS
from zsplg_fast.export.specs.segmenter import SEGMENTER

SPECS: dict[str, ExportSpec] = {}


def register_spec(spec: ExportSpec) -> None:
    """Add (or replace) a spec under ``spec.name``."""
    SPECS[spec.name] = spec


for _s in (
    SAM_ENCODER,
    SAM_ENCODER_PREPROCESS,
    SAM_DECODER,
    SAM_DECODER_BATCHED,
    SAM_DECODER_IMAGE,
    SAM_DECODER_SHARED,
    SAM2_ENCODER,
    SAM2_DECODER,
    SAM2_DECODER_BATCHED,
    CLIP_DENSE,
    CLIP_TEXT,
    SEGMENTER,
):
    register_spec(_s)


def get_spec(name: str) -> ExportSpec:
    """The spec called ``name``; unknown names raise ConfigError with the valid names."""
    if name not in SPECS:
        close = difflib.get_close_matches(name, list(SPECS), n=1)
        raise ConfigError(
            "spec", name, "unknown export spec", ", ".join(SPECS), suggestion=close[0] if close else None
        )
    return SPECS[name]


def family_specs(family: str) -> list[ExportSpec]:
    """Specs consuming one model family, in registry order."""
    return [s for s in SPECS.values() if s.family == family]


__all__ = [
    "SPECS",
    "ExportSpec",
    "Prepared",
    "check_validation_inputs",
    "family_specs",
    "get_spec",
    "register_spec",
]
