"""``clip_text``: the CLIP text tower.

Input ``token_ids`` (B, L) int64 from the open_clip tokenizer (L = context length, 77 for OpenAI-style
models). Output ``text_embeddings`` (B, D) float32, unit L2 norm. The output is not called
``embedding``: with dynamo that name collides with the aten op and gives an invalid model.
Class-prompt embeddings for a dataset are saved beside it as ``.npy`` by the export pipeline
(``TextClassifier.save``), so labeling needs no text tower at run time.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from zsplg_fast.export.specs.base import ExportSpec, Prepared
from zsplg_fast.export.tensors import AxisRange, TensorSpec, Tolerance
from zsplg_fast.models import ClipBundle

_WORDS = ("cat", "a red bus", "two dogs on a sofa", "sky", "a potted plant by the window", "train", "person")


class ClipText(nn.Module):
    """token_ids (B, L) int64 → text_embeddings (B, D) float32 unit-norm."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, token_ids: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.model.encode_text(token_ids), dim=-1)


def prepare_clip_text(bundle: ClipBundle) -> Prepared:
    """Bind ``clip_text`` to ``bundle``: dummy 2 prompts, validation 1 and 7 prompts."""
    ctx = int(bundle.model.context_length)
    d = int(bundle.embed_dim)

    def tok(n: int, offset: int) -> torch.Tensor:
        prompts = [f"a photo of {_WORDS[(i + offset) % len(_WORDS)]}." for i in range(n)]
        return bundle.tokenizer(prompts).to(torch.int64)

    return Prepared(
        module=ClipText(bundle.model).eval(),
        inputs=(TensorSpec("token_ids", "int64", ("batch", ctx)),),
        outputs=(TensorSpec("text_embeddings", "float32", ("batch", d)),),
        dummy={"token_ids": tok(2, 0)},
        validation=[{"token_ids": tok(1, 3)}, {"token_ids": tok(7, 1)}],
        tolerances={"text_embeddings": Tolerance(atol=1e-4, rtol=1e-3, min_cosine=0.99999)},
        profiles={"batch": AxisRange(1, 32, 256)},
        metadata={
            "clip": {"model": bundle.name, "embed_dim": d, "context_length": ctx},
            "tokenizer": f"open_clip.get_tokenizer({bundle.name!r})",
        },
    )


CLIP_TEXT = ExportSpec(
    "clip_text",
    "clip",
    "CLIP text tower: token ids (B,L) int64 → (B,D) unit-norm embeddings",
    prepare_clip_text,
    exporter="dynamo",
    exporter_reason="dynamo: default exporter; output renamed to avoid the 'embedding' collision",
)
