"""The toy CLIP: an open_clip custom config (small ViT + small text transformer) and its word tokenizer.

The image tower is open_clip's ``VisionTransformer`` with ``pool_type='avg'``: the image embedding is
the mean of the projected patch tokens, so the patch tokens themselves learn to carry the class, which
is what mask pooling of dense (GEM) features reads at label time. The text tower is open_clip's
``TextTransformer`` over a closed word vocabulary (the toy world's shape, colour and template words;
anything else maps to ``<unk>``), which keeps the token table at a few hundred rows instead of 49408.
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

import torch
from torch import nn

from zsplg_fast.data.shapes import OBJECT_COLOURS, SHAPES

TOY_CLIP_NAME = "toy_clip"  # the open_clip model name (stem of the config file)
CONFIG_PATH = Path(__file__).with_name("toy_clip.json")

# Prompt templates used to train the text tower; TOY_EVAL_TEMPLATES are the ones used at label time.
TRAIN_TEMPLATES: tuple[str, ...] = (
    "a photo of a {}.",
    "a photo of the {}.",
    "a picture of a {}.",
    "an image of a {}.",
    "a drawing of a {}.",
    "a rendering of a {}.",
    "a {} shape.",
    "a {}.",
    "the {}.",
    "a small {}.",
    "a large {}.",
    "a photo of a small {}.",
    "a photo of a large {}.",
    "a {} in the picture.",
)
TOY_EVAL_TEMPLATES: tuple[str, ...] = ("a photo of a {}.", "a drawing of a {}.", "a {} shape.")
BACKGROUND_WORDS: tuple[str, ...] = ("background", "backdrop", "texture", "pattern")

_EXTRA_WORDS = ("and", "with", "on", "in", "of", "the", "a", "an", "shape", "object", "thing")
_WORD = re.compile(r"[a-z]+")


def toy_vocabulary() -> list[str]:
    """Every word the toy tokenizer knows, in a fixed order (ids 3..V-2)."""
    words: list[str] = []
    for t in TRAIN_TEMPLATES:
        words += _WORD.findall(t.lower())
    words += list(_EXTRA_WORDS) + list(SHAPES) + list(OBJECT_COLOURS) + list(BACKGROUND_WORDS)
    return list(dict.fromkeys(words))


class ToyTokenizer:
    """Lower-cased word tokenizer over ``toy_vocabulary()`` with open_clip's output layout.

    ``__call__(texts)`` → (N, context_length) int64: ``<sot> w1 ... wn <eot> 0 0 ...``; ``<eot>`` has
    the largest id (open_clip's text tower pools the argmax token), unknown words become ``<unk>``,
    long texts are truncated so that ``<eot>`` is always present.
    """

    PAD, SOT, UNK = 0, 1, 2

    def __init__(self, context_length: int = 16) -> None:
        self.context_length = context_length
        self.words = toy_vocabulary()
        self.index = {w: i + 3 for i, w in enumerate(self.words)}
        self.eot = len(self.words) + 3
        self.vocab_size = self.eot + 1

    def encode(self, text: str) -> list[int]:
        """Token ids of one text without padding (``<sot>`` … ``<eot>``)."""
        ids = [self.index.get(w, self.UNK) for w in _WORD.findall(text.lower())]
        return [self.SOT, *ids[: self.context_length - 2], self.eot]

    def __call__(self, texts: str | Sequence[str], context_length: int | None = None) -> torch.Tensor:
        if isinstance(texts, str):
            texts = [texts]
        n = context_length or self.context_length
        out = torch.zeros(len(texts), n, dtype=torch.int64)
        for i, t in enumerate(texts):
            ids = self.encode(t)[:n]
            ids[-1] = self.eot
            out[i, : len(ids)] = torch.tensor(ids)
        return out


class ConvStem(nn.Module):
    """Patch embedding with early convolutions (Xiao et al. 2021, "Early Convolutions Help Transformers
    See Better"): four stages of a 3×3 stride-2 conv and one 3×3 conv (each + GELU), then a 1×1
    projection; total stride 16, receptive field 63 px, so each token already describes local shape.

    Replaces ``VisionTransformer.conv1``: (B, 3, H, W) float → (B, width, H/16, W/16) for H, W multiples
    of 16, exactly the shape contract of the 16-px patch convolution it stands for.
    """

    def __init__(self, width: int, channels: Sequence[int] = (16, 32, 64, 96)) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c_in = 3
        for c in channels:
            layers += [nn.Conv2d(c_in, c, 3, stride=2, padding=1), nn.GELU()]
            layers += [nn.Conv2d(c, c, 3, padding=1), nn.GELU()]
            c_in = c
        layers.append(nn.Conv2d(c_in, width, 1))
        self.layers = nn.Sequential(*layers)
        # variance-preserving init (He et al. 2015): PyTorch's default shrinks each layer's output, and
        # after eight layers the content would be far weaker than the positional embedding it is added to
        for m in self.layers:
            if isinstance(m, nn.Conv2d):
                gain = "relu" if m is not layers[-1] else "linear"
                nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity=gain)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


def toy_clip_config() -> dict:
    """The open_clip model config of the toy CLIP (what ``toy_clip.json`` holds)."""
    return json.loads(CONFIG_PATH.read_text())


def _open_clip() -> ModuleType:
    import os

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import open_clip

    if TOY_CLIP_NAME not in open_clip.list_models():
        open_clip.add_model_config(CONFIG_PATH)
    return open_clip


class _DropRandomInitNotice(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "No pretrained weights loaded" not in record.getMessage()


def build_clip_toy(init_logit_scale: float = 30.0) -> tuple[nn.Module, ToyTokenizer]:
    """A randomly initialised toy CLIP (eval mode) and its tokenizer.

    The image tower's 16-px patch convolution is replaced by a ``ConvStem`` (same output grid); the
    model's ``logit_scale`` starts at ``log(init_logit_scale)``; weights loaded later replace it.
    """
    oc = _open_clip()
    # open_clip logs "No pretrained weights loaded … initialized randomly" on the root logger; here that is
    # by design (shipped weights load next, through the sha256-checked registry), so the line is dropped.
    quiet = _DropRandomInitNotice()
    logging.getLogger().addFilter(quiet)
    try:
        model = oc.create_model(TOY_CLIP_NAME, pretrained=None)
    finally:
        logging.getLogger().removeFilter(quiet)
    visual = model.visual
    if int(visual.patch_size[0]) != 16:
        raise ValueError("the toy CLIP's conv stem has stride 16; toy_clip.json must say patch_size 16")
    visual.conv1 = ConvStem(int(visual.transformer.width))
    with torch.no_grad():
        model.logit_scale.fill_(math.log(init_logit_scale))
    tok = ToyTokenizer(int(toy_clip_config()["text_cfg"]["context_length"]))
    return model.eval(), tok
