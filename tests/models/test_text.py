"""Class-name lists, text embeddings (templates × synonyms, averaged) and the stored TextClassifier."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from zsplg_fast.errors import CheckpointError, ConfigError, DatasetError, OutputExistsError
from zsplg_fast.models import (
    COCO_CLASSES,
    VOC_CLASSES,
    ClipBundle,
    TextClassifier,
    build_text_embeddings,
    load_class_names,
)

# UniMatch util/classes.py: 'pascal', and the first 81 entries of 'coco' (after 'void').
UNIMATCH_VOC = [
    "aeroplane",
    "bicycle",
    "bird",
    "boat",
    "bottle",
    "bus",
    "car",
    "cat",
    "chair",
    "cow",
    "dining_table",
    "dog",
    "horse",
    "motorbike",
    "person",
    "potted_plant",
    "sheep",
    "sofa",
    "train",
    "tv/monitor",
]
UNIMATCH_COCO = [
    "person",
    "bicycle",
    "car",
    "motorcycle",
    "airplane",
    "bus",
    "train",
    "truck",
    "boat",
    "traffic_light",
    "fire_hydrant",
    "stop_sign",
    "parking_meter",
    "bench",
    "bird",
    "cat",
    "dog",
    "horse",
    "sheep",
    "cow",
    "elephant",
    "bear",
    "zebra",
    "giraffe",
    "backpack",
    "umbrella",
    "handbag",
    "tie",
    "suitcase",
    "frisbee",
    "skis",
    "snowboard",
    "sports_ball",
    "kite",
    "baseball_bat",
    "baseball_glove",
    "skateboard",
    "surfboard",
    "tennis_racket",
    "bottle",
    "wine_glass",
    "cup",
    "fork",
    "knife",
    "spoon",
    "bowl",
    "banana",
    "apple",
    "sandwich",
    "orange",
    "broccoli",
    "carrot",
    "hot_dog",
    "pizza",
    "donut",
    "cake",
    "chair",
    "couch",
    "potted_plant",
    "bed",
    "dining_table",
    "toilet",
    "tv",
    "laptop",
    "mouse",
    "remote",
    "keyboard",
    "cell_phone",
    "microwave",
    "oven",
    "toaster",
    "sink",
    "refrigerator",
    "book",
    "clock",
    "vase",
    "scissors",
    "teddy_bear",
    "hair_drier",
    "toothbrush",
]


def test_builtin_lists_follow_unimatch_order() -> None:
    assert len(VOC_CLASSES) == 21 and len(COCO_CLASSES) == 81
    assert VOC_CLASSES[0][0] == "background" == COCO_CLASSES[0][0]
    voc = [c[0] for c in VOC_CLASSES[1:]]
    assert voc == [n.replace("_", " ").replace("tv/monitor", "tv monitor") for n in UNIMATCH_VOC]
    assert [c[0] for c in COCO_CLASSES[1:]] == [n.replace("_", " ") for n in UNIMATCH_COCO]
    for names in VOC_CLASSES + COCO_CLASSES:
        assert names and all(isinstance(n, str) and n.strip() == n and n for n in names)
        assert len(set(names)) == len(names)
    assert COCO_CLASSES[1][:2] == ["person", "people"]


def test_load_class_names_builtins_and_file(tmp_path: Path) -> None:
    assert load_class_names("voc") == VOC_CLASSES and load_class_names("COCO") == COCO_CLASSES
    load_class_names("voc")[1].append("mutated")
    assert "mutated" not in VOC_CLASSES[1]  # callers get copies
    f = tmp_path / "classes.txt"
    f.write_text("# shapes world\nbackground | floor\n\ncircle|disc\nsquare\n", encoding="utf-8")
    assert load_class_names(f) == [["background", "floor"], ["circle", "disc"], ["square"]]


@pytest.mark.parametrize(
    "content,match",
    [
        ("background\ncircle||disc\n", "line 2: empty synonym"),
        ("only\n", "at least 2 classes"),
        (b"\xff\xfe\x00bad", "cannot read class list"),
    ],
)
def test_bad_class_files(tmp_path: Path, content: str | bytes, match: str) -> None:
    f = tmp_path / "bad.txt"
    f.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(DatasetError, match=match):
        load_class_names(f)


def test_unknown_class_spec() -> None:
    with pytest.raises(ConfigError, match="voc, coco, or a path"):
        load_class_names("pascal")


def test_embeddings_average_templates_and_synonyms(tiny_clip: ClipBundle) -> None:
    classes = [["background", "floor"], ["circle", "disc"], ["square"]]
    templates = ["a photo of a {}.", "a drawing of a {}."]
    emb = build_text_embeddings(tiny_clip, classes, templates)
    assert emb.shape == (3, tiny_clip.embed_dim) and emb.dtype == torch.float32
    torch.testing.assert_close(emb.norm(dim=-1), torch.ones(3))
    for row, names in zip(emb, classes, strict=True):
        prompts = [t.format(n) for n in names for t in templates]
        with torch.no_grad():
            each = [
                F.normalize(tiny_clip.model.encode_text(tiny_clip.tokenizer([p]))[0], dim=0) for p in prompts
            ]
        torch.testing.assert_close(row, F.normalize(torch.stack(each).mean(0), dim=0), atol=1e-5, rtol=0)
    # one synonym and one template: the plain normalised prompt embedding
    single = build_text_embeddings(tiny_clip, [["square"], ["disc"]], ["{}"], batch_size=1)
    with torch.no_grad():
        ref = F.normalize(tiny_clip.model.encode_text(tiny_clip.tokenizer(["square", "disc"])), dim=-1)
    torch.testing.assert_close(single, ref, atol=1e-5, rtol=0)


def test_bad_templates(tiny_clip: ClipBundle) -> None:
    with pytest.raises(ConfigError, match=r"templates\[1\]"):
        build_text_embeddings(tiny_clip, [["a"], ["b"]], ["a {}", "no slot"])
    with pytest.raises(ConfigError, match="name per class"):
        build_text_embeddings(tiny_clip, [["a"], []], ["{}"])


def test_classifier_save_load_round_trip(tiny_clip: ClipBundle, tmp_path: Path) -> None:
    classes = [["background"], ["circle", "disc"], ["square"]]
    clf = TextClassifier.from_clip(tiny_clip, classes, ["a photo of a {}."])
    path = clf.save(tmp_path / "text.npy")
    side = json.loads((tmp_path / "text.json").read_text())
    assert side["class_names"] == classes and side["clip"] == "zsplg-test-vit"
    assert side["weights"] == "random-init" and side["templates"] == ["a photo of a {}."]
    assert np.load(path).dtype == np.float32
    assert not list(tmp_path.glob(".*.tmp"))
    back = TextClassifier.load(path)
    assert torch.equal(back.embeddings, clf.embeddings) and back.class_names == classes
    assert back.meta == clf.meta and back.num_classes == 3
    feats = torch.randn(4, tiny_clip.embed_dim)
    cos = back.cosine(feats * 7.0)
    assert cos.shape == (4, 3)
    torch.testing.assert_close(cos, F.normalize(feats, dim=-1) @ clf.embeddings.T)
    with pytest.raises(OutputExistsError):
        clf.save(path)
    clf.save(path, overwrite=True)


def test_classifier_load_errors(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="rebuild"):
        TextClassifier.load(tmp_path / "absent.npy")
    clf = TextClassifier(torch.eye(3), [["a"], ["b"], ["c"]])
    path = clf.save(tmp_path / "t.npy")
    (tmp_path / "t.json").write_text(json.dumps({"class_names": [["a"], ["b"]]}))
    with pytest.raises(CheckpointError, match="does not match 2 class names"):
        TextClassifier.load(path)
    (tmp_path / "t.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="cannot read"):
        TextClassifier.load(path)
    with pytest.raises(ConfigError):
        TextClassifier(torch.eye(3), [["a"]])
