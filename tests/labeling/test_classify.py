import numpy as np
import torch
import torch.nn.functional as F

from zsplg_fast.labeling.classify import MaskClassifier, clip_preprocess


def _constructed(d=4, h=4, w=4):
    """Feature map: left half = e0, right half = e1 (unit vectors)."""
    f = torch.zeros(1, d, h, w)
    f[0, 0, :, : w // 2] = 1.0
    f[0, 1, :, w // 2 :] = 1.0
    return f


def _classifier(text, **kw):
    feats = _constructed()
    return MaskClassifier(lambda x: feats, text, image_size=8, mean=(0, 0, 0), std=(1, 1, 1), **kw), feats


def test_mask_gets_class_of_pooled_feature():
    # text rows = classes 1, 2 (background not prompted); class 1 ~ e0, class 2 ~ e1
    text = torch.tensor([[1.0, 0, 0, 0], [0, 1.0, 0, 0]])
    clf, _ = _classifier(text)
    img = np.zeros((16, 16, 3), np.uint8)
    f = clf.features(img)
    assert f.shape == (4, 4, 4)
    masks = torch.zeros(3, 16, 16, dtype=torch.bool)
    masks[0, :, :8] = True  # left → class 1
    masks[1, :, 8:] = True  # right → class 2
    masks[2, :, 4:16] = True  # 1/3 left, 2/3 right → class 2
    res = clf.classify(masks, f)
    assert res.classes.tolist() == [1, 2, 2]
    # cosine of the mixed mask: pooled = (1/3, 2/3) → cos with e1 = 2/sqrt(5)
    assert abs(res.cosine[2].item() - 2 / np.sqrt(5)) < 1e-5
    # softmax score with logit scale 100 on cos (1, 0) is ~1
    assert res.scores[0].item() > 0.999


def test_score_threshold_makes_background():
    text = torch.tensor([[1.0, 0, 0, 0], [0, 1.0, 0, 0]])
    clf, _ = _classifier(text, logit_scale=1.0, score_threshold=0.6)
    f = clf.features(np.zeros((16, 16, 3), np.uint8))
    masks = torch.zeros(2, 16, 16, dtype=torch.bool)
    masks[0, :, :8] = True
    masks[1, :, 4:12] = True  # half/half: tie → softmax 0.5 < 0.6 → background
    res = clf.classify(masks, f)
    expected0 = torch.softmax(torch.tensor([1.0, 0.0]), 0)[0].item()  # ≈ 0.731 ≥ 0.6
    assert abs(res.scores[0].item() - expected0) < 1e-5
    assert res.classes.tolist() == [1, 0]
    assert res.best[1].item() in (1, 2)


def test_background_in_text_offsets():
    text = F.normalize(torch.tensor([[0, 0, 1.0, 0], [1.0, 0, 0, 0], [0, 1.0, 0, 0]]), dim=-1)
    clf, _ = _classifier(text, background_in_text=True)
    assert clf.num_classes == 3
    f = clf.features(np.zeros((16, 16, 3), np.uint8))
    masks = torch.zeros(1, 16, 16, dtype=torch.bool)
    masks[0, :, 8:] = True
    assert clf.classify(masks, f).classes.tolist() == [2]


def test_empty_masks():
    clf, _ = _classifier(torch.eye(4)[:2])
    res = clf.classify(torch.zeros(0, 16, 16, dtype=torch.bool), torch.zeros(4, 4, 4))
    assert res.classes.numel() == 0 and res.scores.numel() == 0


def test_clip_preprocess_shape_and_normalisation():
    img = np.full((30, 50, 3), 255, np.uint8)
    x = clip_preprocess(img, 16, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    assert x.shape == (1, 3, 16, 16) and x.dtype == torch.float32
    assert torch.allclose(x, torch.ones_like(x), atol=1e-5)
