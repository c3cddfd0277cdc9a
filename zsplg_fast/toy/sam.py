"""The toy SAM: segment-anything's own modules at a 256 px input (about 1.9M parameters).

Built like segment_anything/build_sam.py ``_build_sam`` (read, not copied), smaller: ViT patch 16 at
256 px gives a 16×16 embedding grid; prompt encoder and mask decoder are 128 wide. The model runs
unchanged under upstream ``SamPredictor`` and ``SamAutomaticMaskGenerator``.
"""

from __future__ import annotations

from functools import partial

import torch
from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer

TOY_SAM_IMAGE_SIZE = 256
TOY_SAM_PATCH = 16
TOY_SAM_DIM = 128


def build_sam_toy() -> Sam:
    """A randomly initialised toy SAM in eval mode (input 256 px, embedding (1, 128, 16, 16))."""
    grid = TOY_SAM_IMAGE_SIZE // TOY_SAM_PATCH
    sam = Sam(
        image_encoder=ImageEncoderViT(
            img_size=TOY_SAM_IMAGE_SIZE,
            patch_size=TOY_SAM_PATCH,
            embed_dim=128,
            depth=4,
            num_heads=4,
            mlp_ratio=4.0,
            out_chans=TOY_SAM_DIM,
            qkv_bias=True,
            norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
            use_rel_pos=True,
            window_size=8,
            global_attn_indexes=(1, 3),
        ),
        prompt_encoder=PromptEncoder(
            embed_dim=TOY_SAM_DIM,
            image_embedding_size=(grid, grid),
            input_image_size=(TOY_SAM_IMAGE_SIZE, TOY_SAM_IMAGE_SIZE),
            mask_in_chans=16,
        ),
        mask_decoder=MaskDecoder(
            num_multimask_outputs=3,
            transformer=TwoWayTransformer(depth=2, embedding_dim=TOY_SAM_DIM, mlp_dim=512, num_heads=4),
            transformer_dim=TOY_SAM_DIM,
            iou_head_depth=3,
            iou_head_hidden_dim=128,
        ),
    )
    return sam.eval()
