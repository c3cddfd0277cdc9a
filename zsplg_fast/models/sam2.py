"""SAM 2 / SAM 2.1 builders through the official ``sam2`` package (optional extra ``[sam2]``).

The official variants are the ``sam2`` package's own hydra configs (``configs/sam2.1/sam2.1_hiera_*.yaml``,
``configs/sam2/sam2_hiera_*.yaml``) composed with the overrides ``sam2.build_sam.build_sam2`` adds for
image use (dynamic multimask via stability, delta 0.05, threshold 0.98), then instantiated with hydra,
as ``build_sam2`` does. Weights are loaded by us (``zsplg_fast.models.sam.build_sam``), so a bad file is
a one-line ``CheckpointError``. ``sam2_tiny`` is a small Hiera (embed 32, 5 blocks, 256 px input) of
the same classes, given as a config dict, for tests.

``sam2`` is imported lazily: without it, only the SAM 2 variants fail, with ``MissingDependencyError``.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from zsplg_fast.errors import MissingDependencyError

SAM2_INSTALL = 'SAM2_BUILD_CUDA=0 pip install --no-build-isolation "sam2==1.1.0"  (or: pip install .[sam2])'

# as sam2.build_sam.build_sam2(apply_postprocessing=True): the image predictor's settings
IMAGE_OVERRIDES = {
    "dynamic_multimask_via_stability": True,
    "dynamic_multimask_stability_delta": 0.05,
    "dynamic_multimask_stability_thresh": 0.98,
}

SAM2_CONFIGS: dict[str, str | Mapping[str, Any]] = {
    **{f"sam2.1_hiera_{s}": f"configs/sam2.1/sam2.1_hiera_{s}.yaml" for s in ("t", "s", "b+", "l")},
    **{f"sam2_hiera_{s}": f"configs/sam2/sam2_hiera_{s}.yaml" for s in ("t", "s", "b+", "l")},
}
"""SAM 2 variant → the ``sam2`` package's config name, or a config mapping (the YAML's content)."""


def _tiny_config() -> dict[str, Any]:
    """A small SAM 2.1-style config (Hiera embed 32, stages 1-1-2-1, neck 64 channels, 256 px input):
    the official classes at a size where tests take seconds; memory modules shrunk, never used here."""
    pos = {
        "_target_": "sam2.modeling.position_encoding.PositionEmbeddingSine",
        "num_pos_feats": 64,
        "normalize": True,
        "scale": None,
        "temperature": 10000,
    }
    rope = {
        "_target_": "sam2.modeling.sam.transformer.RoPEAttention",
        "rope_theta": 10000.0,
        "feat_sizes": [16, 16],
        "embedding_dim": 64,
        "num_heads": 1,
        "downsample_rate": 1,
        "dropout": 0.1,
    }
    return {
        "model": {
            "_target_": "sam2.modeling.sam2_base.SAM2Base",
            "image_encoder": {
                "_target_": "sam2.modeling.backbones.image_encoder.ImageEncoder",
                "scalp": 1,
                "trunk": {
                    "_target_": "sam2.modeling.backbones.hieradet.Hiera",
                    "embed_dim": 32,
                    "num_heads": 1,
                    "stages": [1, 1, 2, 1],
                    "global_att_blocks": [3],
                    "window_pos_embed_bkg_spatial_size": [4, 4],
                    "window_spec": [8, 4, 4, 2],
                },
                "neck": {
                    "_target_": "sam2.modeling.backbones.image_encoder.FpnNeck",
                    "position_encoding": pos,
                    "d_model": 64,
                    "backbone_channel_list": [256, 128, 64, 32],
                    "fpn_top_down_levels": [2, 3],
                    "fpn_interp_model": "nearest",
                },
            },
            "memory_attention": {
                "_target_": "sam2.modeling.memory_attention.MemoryAttention",
                "d_model": 64,
                "pos_enc_at_input": True,
                "num_layers": 1,
                "layer": {
                    "_target_": "sam2.modeling.memory_attention.MemoryAttentionLayer",
                    "activation": "relu",
                    "dim_feedforward": 128,
                    "dropout": 0.1,
                    "pos_enc_at_attn": False,
                    "d_model": 64,
                    "pos_enc_at_cross_attn_keys": True,
                    "pos_enc_at_cross_attn_queries": False,
                    "self_attention": rope,
                    "cross_attention": {**rope, "rope_k_repeat": True, "kv_in_dim": 16},
                },
            },
            "memory_encoder": {
                "_target_": "sam2.modeling.memory_encoder.MemoryEncoder",
                "out_dim": 16,
                "position_encoding": {**pos, "num_pos_feats": 16},
                "mask_downsampler": {
                    "_target_": "sam2.modeling.memory_encoder.MaskDownSampler",
                    "kernel_size": 3,
                    "stride": 2,
                    "padding": 1,
                    "embed_dim": 64,
                },
                "fuser": {
                    "_target_": "sam2.modeling.memory_encoder.Fuser",
                    "num_layers": 1,
                    "layer": {
                        "_target_": "sam2.modeling.memory_encoder.CXBlock",
                        "dim": 64,
                        "kernel_size": 7,
                        "padding": 3,
                        "layer_scale_init_value": 1e-6,
                        "use_dwconv": True,
                    },
                },
                "in_dim": 64,
            },
            "num_maskmem": 2,
            "image_size": 256,
            "sigmoid_scale_for_mem_enc": 20.0,
            "sigmoid_bias_for_mem_enc": -10.0,
            "use_mask_input_as_output_without_sam": True,
            "directly_add_no_mem_embed": True,
            "no_obj_embed_spatial": True,
            "use_high_res_features_in_sam": True,
            "multimask_output_in_sam": True,
            "iou_prediction_use_sigmoid": True,
            "use_obj_ptrs_in_encoder": True,
            "add_tpos_enc_to_obj_ptrs": True,
            "proj_tpos_enc_in_obj_ptrs": True,
            "use_signed_tpos_enc_to_obj_ptrs": True,
            "only_obj_ptrs_in_the_past_for_eval": True,
            "pred_obj_scores": True,
            "pred_obj_scores_mlp": True,
            "fixed_no_obj_ptr": True,
            "multimask_output_for_tracking": True,
            "use_multimask_token_for_obj_ptr": True,
            "multimask_min_pt_num": 0,
            "multimask_max_pt_num": 1,
            "use_mlp_for_obj_ptr_proj": True,
            "compile_image_encoder": False,
        }
    }


SAM2_CONFIGS["sam2_tiny"] = _tiny_config()


def is_sam2_variant(variant: str) -> bool:
    """True for the SAM 2 family's variant names (official or registered with ``register_sam2_variant``)."""
    return variant in SAM2_CONFIGS


def _hydra() -> tuple[Any, Any, Any]:
    """(compose, instantiate, OmegaConf), importing ``sam2`` (which initialises its hydra config module)."""
    try:
        import sam2  # noqa: F401  (registers the package's configs with hydra)
        from hydra import compose
        from hydra.utils import instantiate
        from omegaconf import OmegaConf
    except ImportError as e:
        raise MissingDependencyError("sam2", "SAM 2 / SAM 2.1 models", SAM2_INSTALL) from e
    return compose, instantiate, OmegaConf


def sam2_config(variant: str) -> Any:
    """The composed, resolved OmegaConf config of a SAM 2 variant, with the image-predictor overrides."""
    compose, _, omegaconf = _hydra()
    src = SAM2_CONFIGS[variant]
    overrides = {f"model.sam_mask_decoder_extra_args.{k}": v for k, v in IMAGE_OVERRIDES.items()}
    if isinstance(src, str):
        cfg = compose(config_name=src, overrides=[f"++{k}={str(v).lower()}" for k, v in overrides.items()])
    else:
        cfg = omegaconf.create(copy.deepcopy(dict(src)))
        for k, v in overrides.items():
            omegaconf.update(cfg, k, v, force_add=True)
    omegaconf.resolve(cfg)
    return cfg


def build_sam2_random(variant: str) -> nn.Module:
    """A randomly initialised ``SAM2Base`` of ``variant`` in eval mode, on the CPU (hydra instantiate)."""
    _, instantiate, _ = _hydra()
    return instantiate(sam2_config(variant).model, _recursive_=True).eval()


@dataclass(frozen=True)
class Sam2Facts:
    """Architecture facts read from a config or a checkpoint: trunk width, depth, SAM 2.1 or 2.0."""

    embed_dim: int
    depth: int
    sam21: bool

    def describe(self) -> str:
        gen = "SAM 2.1" if self.sam21 else "SAM 2"
        return f"{gen} Hiera (trunk width {self.embed_dim}, {self.depth} blocks)"


def config_facts(variant: str) -> Sam2Facts:
    """Facts of a registered SAM 2 variant, from its config (nothing is built)."""
    import inspect

    from sam2.modeling.backbones.hieradet import Hiera

    m = sam2_config(variant).model
    trunk = m.image_encoder.trunk
    defaults = inspect.signature(Hiera.__init__).parameters  # b+ configs leave stages at Hiera's default
    stages = trunk.get("stages", defaults["stages"].default)
    width = trunk.get("embed_dim", defaults["embed_dim"].default)
    return Sam2Facts(int(width), int(sum(stages)), bool(m.get("no_obj_embed_spatial", False)))


def sam2_input_size(variant: str) -> int:
    """The square input size S of a registered SAM 2 variant, from its config (nothing is built: Hiera
    cannot be built on the meta device); ``SAM2Base``'s default when the config leaves it out."""
    import inspect

    from sam2.modeling.sam2_base import SAM2Base

    default = inspect.signature(SAM2Base.__init__).parameters["image_size"].default
    return int(sam2_config(variant).model.get("image_size", default))


def checkpoint_facts(sd: Mapping[str, torch.Tensor]) -> Sam2Facts | None:
    """Facts of a SAM 2 state_dict, or None when it has no Hiera trunk."""
    w = sd.get("image_encoder.trunk.patch_embed.proj.weight")
    if w is None or w.ndim != 4:
        return None
    blocks = {k.split(".")[3] for k in sd if k.startswith("image_encoder.trunk.blocks.")}
    return Sam2Facts(int(w.shape[0]), len(blocks), "no_obj_embed_spatial" in sd)


def identify_sam2_variant(sd: Mapping[str, torch.Tensor]) -> str | None:
    """The official SAM 2 variant whose trunk width, depth and generation match ``sd``, else None."""
    facts = checkpoint_facts(sd)
    if facts is None:
        return None
    try:
        for name, src in SAM2_CONFIGS.items():
            if isinstance(src, str) and config_facts(name) == facts:
                return name
    except MissingDependencyError:
        return None
    return None


@dataclass(frozen=True)
class Sam2Info:
    """What callers need for a SAM 2: square input ``img_size`` (resized, not padded), embedding grid,
    widths, high-res channels, normalisation (0..1 scale, ImageNet) and the dynamic multimask settings."""

    img_size: int
    embedding_size: int
    hidden_dim: int
    high_res_channels: tuple[int, int]
    num_mask_tokens: int
    pixel_mean: tuple[float, float, float]
    pixel_std: tuple[float, float, float]
    dynamic_multimask_stability_delta: float
    dynamic_multimask_stability_thresh: float


# SAM2Transforms (sam2/utils/transforms.py): ToTensor (0..1), Resize((S, S)), Normalize(ImageNet)
SAM2_PIXEL_MEAN = (0.485, 0.456, 0.406)
SAM2_PIXEL_STD = (0.229, 0.224, 0.225)


def sam2_info(model: nn.Module) -> Sam2Info:
    """Read sizes and settings from a built ``SAM2Base`` (or a structured stand-in with the same fields)."""
    md = model.sam_mask_decoder
    s = int(model.image_size)
    return Sam2Info(
        img_size=s,
        embedding_size=int(model.sam_image_embedding_size),
        hidden_dim=int(model.hidden_dim),
        high_res_channels=(int(md.conv_s0.out_channels), int(md.conv_s1.out_channels)),
        num_mask_tokens=int(md.num_mask_tokens),
        pixel_mean=SAM2_PIXEL_MEAN,
        pixel_std=SAM2_PIXEL_STD,
        dynamic_multimask_stability_delta=float(md.dynamic_multimask_stability_delta),
        dynamic_multimask_stability_thresh=float(md.dynamic_multimask_stability_thresh),
    )
