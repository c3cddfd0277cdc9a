"""Class-name lists (with synonyms), CLIP text embeddings and a stored text classifier.

Embeddings follow open_clip ``zero_shot_classifier.build_zero_shot_classifier``: every prompt
(template × synonym) is encoded and L2-normalised, the prompts of a class are averaged, and the mean is
renormalised. The class order is the label-map index order (VOC: UniMatch ``util/classes.py`` 'pascal';
COCO: its first 81 entries, background then the 80 thing classes by category id).
"""

from __future__ import annotations

import io
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from zsplg_fast.errors import CheckpointError, ConfigError, DatasetError
from zsplg_fast.models.clip import ClipBundle
from zsplg_fast.utils.io import atomic_write_json, atomic_write_with
from zsplg_fast.utils.outdir import refuse_foreign_file

BACKGROUND = ["background", "sky", "wall", "floor", "ground", "grass", "road", "tree", "building", "water"]
"""Background synonyms: one averaged prompt set for class 0 (optional background prompts)."""

VOC_CLASSES: list[list[str]] = [
    BACKGROUND,
    ["aeroplane", "airplane", "aircraft"],
    ["bicycle", "bike"],
    ["bird"],
    ["boat", "ship"],
    ["bottle"],
    ["bus"],
    ["car"],
    ["cat"],
    ["chair"],
    ["cow"],
    ["dining table", "table"],
    ["dog"],
    ["horse"],
    ["motorbike", "motorcycle"],
    ["person", "people", "man", "woman", "child"],
    ["potted plant", "houseplant"],
    ["sheep"],
    ["sofa", "couch"],
    ["train"],
    ["tv monitor", "television", "monitor"],
]
"""21 PASCAL VOC classes: background + 20, each a list of synonyms (first = canonical name)."""

_COCO_THINGS = (
    "person|people,bicycle|bike,car,motorcycle|motorbike,airplane|aeroplane,bus,train,truck,boat|ship,"
    "traffic light,fire hydrant,stop sign,parking meter,bench,bird,cat,dog,horse,sheep,cow,elephant,bear,"
    "zebra,giraffe,backpack,umbrella,handbag|purse,tie|necktie,suitcase,frisbee,skis,snowboard,"
    "sports ball|ball,kite,baseball bat,baseball glove,skateboard,surfboard,tennis racket,bottle,"
    "wine glass,cup|mug,fork,knife,spoon,bowl,banana,apple,sandwich,orange,broccoli,carrot,hot dog,pizza,"
    "donut|doughnut,cake,chair,couch|sofa,potted plant|houseplant,bed,dining table|table,toilet,"
    "tv|television,laptop,mouse|computer mouse,remote|remote control,keyboard,cell phone|mobile phone,"
    "microwave,oven,toaster,sink,refrigerator|fridge,book,clock,vase,scissors,teddy bear,"
    "hair drier|hair dryer,toothbrush"
)

COCO_CLASSES: list[list[str]] = [BACKGROUND, *[c.split("|") for c in _COCO_THINGS.split(",")]]
"""81 COCO classes in UniMatch's order: background + the 80 thing classes, each a list of synonyms."""

BUILTIN_CLASS_LISTS: dict[str, list[list[str]]] = {"voc": VOC_CLASSES, "coco": COCO_CLASSES}


def parse_class_lines(text: str, source: str = "<text>") -> list[list[str]]:
    """One class per non-empty line, synonyms separated by '|'; lines starting with '#' are comments."""
    classes: list[list[str]] = []
    for n, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        names = [s.strip() for s in line.split("|")]
        if any(not s for s in names):
            raise DatasetError(source, f"line {n}: empty synonym in {line!r}; write 'name|synonym|...'")
        classes.append(names)
    if len(classes) < 2:
        raise DatasetError(source, f"needs at least 2 classes, found {len(classes)}")
    return classes


def load_class_names(spec: str | Path) -> list[list[str]]:
    """Class names from 'voc', 'coco', or a text file (one class per line, '|'-separated synonyms).

    Index i of the result is label value i, so a file's first line is usually the background.

    Raises:
        ConfigError: neither a built-in name nor an existing file.
        DatasetError: the file is unreadable or malformed.
    """
    key = str(spec)
    if key.lower() in BUILTIN_CLASS_LISTS:
        return [list(c) for c in BUILTIN_CLASS_LISTS[key.lower()]]
    path = Path(key)
    if not path.is_file():
        raise ConfigError(
            "classes", key, "not a built-in class list nor a file", valid="voc, coco, or a path"
        )
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise DatasetError(path, f"cannot read class list ({type(e).__name__}); save it as UTF-8 text") from e
    return parse_class_lines(text, str(path))


def build_prompts(names: Sequence[str], templates: Sequence[str]) -> list[str]:
    """Every template × synonym prompt, template-major (``'{}'`` in a template is the name)."""
    return [t.replace("{}", name) for t in templates for name in names]


@torch.no_grad()
def build_text_embeddings(
    bundle: ClipBundle,
    class_names: Sequence[Sequence[str]],
    templates: Sequence[str] = ("a photo of a {}.",),
    batch_size: int = 256,
) -> torch.Tensor:
    """(C, D) float32 unit-norm class embeddings: mean of the unit-norm prompt embeddings, renormalised.

    Args:
        bundle: a built CLIP (its text tower and tokenizer are used).
        class_names: C classes, each a non-empty list of synonyms.
        templates: prompt templates, each containing '{}'.
        batch_size: prompts encoded per forward pass.
    """
    for i, t in enumerate(templates):
        if "{}" not in t:
            raise ConfigError(f"clip.templates[{i}]", t, "template must contain '{}'")
    if not templates or not class_names or any(not names for names in class_names):
        raise ConfigError("classes", list(class_names), "need ≥ 1 template and ≥ 1 name per class")
    prompts = [build_prompts(names, templates) for names in class_names]
    flat = [p for group in prompts for p in group]
    device = next(bundle.model.parameters()).device
    chunks = []
    for start in range(0, len(flat), batch_size):
        tokens = bundle.tokenizer(flat[start : start + batch_size]).to(device)
        chunks.append(F.normalize(bundle.model.encode_text(tokens).float(), dim=-1))
    emb = torch.cat(chunks).cpu()
    out, start = [], 0
    for group in prompts:
        out.append(emb[start : start + len(group)].mean(dim=0))
        start += len(group)
    return F.normalize(torch.stack(out), dim=-1)


class TextClassifier:
    """Stored (C, D) class embeddings, so labeling needs no text tower.

    ``save(path.npy)`` writes the float32 matrix and a ``path.json`` sidecar (class names, metadata).
    """

    def __init__(
        self, embeddings: torch.Tensor, class_names: Sequence[Sequence[str]], meta: dict | None = None
    ) -> None:
        if embeddings.ndim != 2 or embeddings.shape[0] != len(class_names):
            raise ConfigError(
                "classes", len(class_names), f"do not match embeddings {tuple(embeddings.shape)}"
            )
        self.embeddings = embeddings.detach().float().cpu()
        self.class_names = [list(c) for c in class_names]
        self.meta = dict(meta or {})

    @classmethod
    def from_clip(
        cls, bundle: ClipBundle, class_names: Sequence[Sequence[str]], templates: Sequence[str]
    ) -> TextClassifier:
        """Encode ``class_names`` × ``templates`` with ``bundle`` (records model name and weights)."""
        emb = build_text_embeddings(bundle, class_names, templates)
        meta = {"clip": bundle.name, "weights": bundle.weights, "templates": list(templates)}
        return cls(emb, class_names, meta)

    @property
    def num_classes(self) -> int:
        return int(self.embeddings.shape[0])

    def cosine(self, features: torch.Tensor) -> torch.Tensor:
        """(K, D) features → (K, C) cosine similarities in [-1, 1] (features are L2-normalised here)."""
        return F.normalize(features.float(), dim=-1) @ self.embeddings.to(features.device).T

    @staticmethod
    def sidecar(path: str | Path) -> Path:
        return Path(path).with_suffix(".json")

    def save(self, path: str | Path, overwrite: bool = False) -> Path:
        """Write ``path`` (.npy, float32 (C, D)) and its ``.json`` sidecar atomically; returns ``path``.

        An existing file is refused (``OutputExistsError``) unless ``overwrite``.
        """
        p = Path(path)
        if p.suffix != ".npy":
            raise ConfigError("text_embeddings", str(p), "file must end in .npy")
        refuse_foreign_file((p, self.sidecar(p)), self.sidecar(p), overwrite, keys=("class_names", "shape"))
        buf = io.BytesIO()
        np.save(buf, self.embeddings.numpy().astype(np.float32), allow_pickle=False)
        atomic_write_with(p, lambda f: f.write(buf.getvalue()))
        side = {"class_names": self.class_names, "shape": list(self.embeddings.shape), **self.meta}
        atomic_write_json(self.sidecar(p), side)
        return p

    @classmethod
    def load(cls, path: str | Path) -> TextClassifier:
        """Read a classifier written by ``save``; missing, corrupt or mismatched files: CheckpointError."""
        p, side = Path(path), cls.sidecar(path)
        if not p.is_file() or not side.is_file():
            raise CheckpointError(p, f"text embeddings need {p.name} and {side.name}; rebuild them")
        try:
            emb = np.load(p, allow_pickle=False)
            info = json.loads(side.read_text(encoding="utf-8"))
            names = info.pop("class_names")
        except (OSError, ValueError, KeyError) as e:
            raise CheckpointError(p, f"cannot read text embeddings ({type(e).__name__}); rebuild them") from e
        if emb.ndim != 2 or emb.shape[0] != len(names):
            raise CheckpointError(
                p, f"shape {emb.shape} does not match {len(names)} class names in {side.name}"
            )
        info.pop("shape", None)
        return cls(torch.from_numpy(emb.astype(np.float32)), names, info)
