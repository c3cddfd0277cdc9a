"""Plain ``nn.Module`` builders and checkpoint loading: SAM, CLIP (+ GEM dense features), text classifier.

open_clip is imported lazily (it costs ≈2 s), so importing this package stays cheap.
"""

from __future__ import annotations

from zsplg_fast.models.clip import (
    CLIP_BUILDERS,
    ClipBundle,
    build_clip,
    open_clip_config_builder,
    register_clip_model,
    save_clip_checkpoint,
)
from zsplg_fast.models.gem import DenseClip, self_self_attention
from zsplg_fast.models.sam import (
    SAM_BUILDERS,
    SamInfo,
    build_sam,
    identify_sam_variant,
    register_sam_variant,
    resolve_sam_checkpoint,
    sam_info,
    save_sam_checkpoint,
    weights_fingerprint,
)
from zsplg_fast.models.text import (
    COCO_CLASSES,
    VOC_CLASSES,
    TextClassifier,
    build_text_embeddings,
    load_class_names,
)

__all__ = [
    "CLIP_BUILDERS",
    "COCO_CLASSES",
    "SAM_BUILDERS",
    "VOC_CLASSES",
    "ClipBundle",
    "DenseClip",
    "SamInfo",
    "TextClassifier",
    "build_clip",
    "build_sam",
    "build_text_embeddings",
    "identify_sam_variant",
    "load_class_names",
    "open_clip_config_builder",
    "register_clip_model",
    "register_sam_variant",
    "resolve_sam_checkpoint",
    "sam_info",
    "save_clip_checkpoint",
    "save_sam_checkpoint",
    "self_self_attention",
    "weights_fingerprint",
]
