"""The toy SAM: the models layer's ``tiny`` SAM architecture (segment-anything's own modules at a 256 px
input, about 1.9M parameters), trained on the toy world. It runs unchanged under upstream
``SamPredictor`` and ``SamAutomaticMaskGenerator``.
"""

from __future__ import annotations

from segment_anything.modeling import Sam

from zsplg_fast.models.sam import build_sam_tiny

TOY_SAM_IMAGE_SIZE = 256  # build_sam_tiny's input size (16×16 embedding grid at patch 16)


def build_sam_toy() -> Sam:
    """A randomly initialised toy SAM in eval mode (input 256 px, embedding (1, 128, 16, 16))."""
    sam = build_sam_tiny()
    if sam.image_encoder.img_size != TOY_SAM_IMAGE_SIZE:
        raise ValueError(f"build_sam_tiny's input is {sam.image_encoder.img_size}, the toy SAM needs 256")
    return sam
