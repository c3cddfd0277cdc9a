"""DeepLabV3+ as UniMatch builds it: shapes, OS16, deep stem, fp branch, weights and checkpoints."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from zsplg_fast.errors import CheckpointError, ConfigError
from zsplg_fast.models.segmenter import (
    BACKBONES,
    build_segmenter,
    head_parameters,
    load_backbone_weights,
    load_checkpoint,
    save_checkpoint,
)


@pytest.fixture(autouse=True)
def _threads() -> None:
    torch.set_num_threads(1)


def test_output_shape_any_size_and_os16() -> None:
    torch.manual_seed(0)
    m = build_segmenter("tiny", 5).eval()
    assert m(torch.randn(2, 3, 65, 97)).shape == (2, 5, 65, 97)
    c1, _, _, c4 = m.backbone.base_forward(torch.randn(1, 3, 64, 64))
    assert c1.shape[-2:] == (16, 16) and c4.shape[-2:] == (4, 4)  # low level OS4, high level OS16


@pytest.mark.parametrize("name", ["tiny", "resnet50"])
def test_deep_stem_and_dilated_last_stage(name: str) -> None:
    m = build_segmenter(name, 21)
    convs = [c for c in m.backbone.conv1 if isinstance(c, torch.nn.Conv2d)]
    assert [c.kernel_size for c in convs] == [(3, 3)] * 3 and convs[0].stride == (2, 2)
    first = m.backbone.layer4[0]
    assert first.conv2.stride == (1, 1) and first.conv2.dilation == (1, 1)  # previous dilation (upstream)
    assert all(b.conv2.dilation == (2, 2) for b in list(m.backbone.layer4)[1:])
    assert m.backbone.layer3[0].conv2.stride == (2, 2)
    assert [m.head.b1[0].dilation, m.head.b2[0].dilation, m.head.b3[0].dilation] == [
        (6, 6),
        (12, 12),
        (18, 18),
    ]
    spec = BACKBONES[name]
    assert m.reduce[0].out_channels == spec.reduce and m.classifier.in_channels == spec.fuse
    if name == "resnet50":
        assert (spec.aspp, spec.reduce, spec.fuse, spec.high_channels) == (256, 48, 256, 2048)
        n = sum(p.numel() for p in m.backbone.parameters())
        assert 23.5e6 < n < 23.7e6  # ResNet-50 without fc (23.51M) + deep stem's extra ≈ 0.1M


def test_upstream_parameter_names() -> None:
    keys = set(build_segmenter("tiny", 3).state_dict())
    for k in (
        "backbone.conv1.0.weight",
        "backbone.conv1.6.weight",
        "backbone.bn1.running_mean",
        "backbone.layer1.0.downsample.0.weight",
        "backbone.layer4.0.bn3.weight",
        "head.b0.0.weight",
        "head.b4.gap.1.weight",
        "head.project.0.weight",
        "reduce.0.weight",
        "fuse.3.weight",
        "classifier.bias",
    ):
        assert k in keys, k
    backbone, head = head_parameters(build_segmenter("tiny", 3))
    assert len(backbone) > 0 and len(head) > 0


def test_need_fp_returns_clean_and_perturbed() -> None:
    torch.manual_seed(0)
    m = build_segmenter("tiny", 4)
    x = torch.randn(2, 3, 64, 64)
    m.eval()
    with torch.no_grad():
        clean, fp = m(x, need_fp=True)
        plain = m(x)
    assert clean.shape == fp.shape == (2, 4, 64, 64)
    assert torch.allclose(clean, plain, atol=1e-5)  # BN in eval: the clean half is the plain forward
    assert not torch.allclose(fp, plain, atol=1e-3)  # Dropout2d(0.5) applies even in eval, as upstream


def test_backbone_weights_report(tmp_path: Path) -> None:
    src = build_segmenter("tiny", 3).backbone.state_dict()
    dropped = "layer2.0.conv1.weight"
    state = {k: v for k, v in src.items() if k != dropped}
    state["fc.weight"] = torch.zeros(10, 64)
    torch.save(state, tmp_path / "r.pth")
    target = build_segmenter("tiny", 3)
    report = load_backbone_weights(target.backbone, tmp_path / "r.pth")
    assert report["missing"] == [dropped] and report["unexpected"] == ["fc.weight"]
    assert torch.equal(target.backbone.state_dict()["layer1.0.conv1.weight"], src["layer1.0.conv1.weight"])
    bad = dict(state, **{"conv1.0.weight": torch.zeros(8, 3, 3, 3)})
    torch.save(bad, tmp_path / "bad.pth")
    with pytest.raises(CheckpointError, match=r"conv1\.0\.weight"):
        load_backbone_weights(target.backbone, tmp_path / "bad.pth")
    with pytest.raises(CheckpointError, match="not found"):
        build_segmenter("tiny", 3, pretrained=tmp_path / "nope.pth")


def test_checkpoint_round_trip(tmp_path: Path) -> None:
    torch.manual_seed(0)
    m = build_segmenter("tiny", 4, dilations=(2, 4, 6)).eval()
    save_checkpoint(tmp_path / "m.pth", m, ["a", "b", "c", "d"], {"note": 1})
    back, obj = load_checkpoint(tmp_path / "m.pth")
    x = torch.randn(1, 3, 48, 48)
    with torch.no_grad():
        assert torch.equal(m(x), back(x))
    assert (
        back.config.dilations == (2, 4, 6) and obj["class_names"] == ["a", "b", "c", "d"] and obj["note"] == 1
    )
    torch.save({"weights": 1}, tmp_path / "other.pth")
    with pytest.raises(CheckpointError, match="not a zsplg-fast segmenter"):
        load_checkpoint(tmp_path / "other.pth")
    obj["model_config"]["num_classes"] = 7
    torch.save(obj, tmp_path / "tampered.pth")
    with pytest.raises(CheckpointError, match="do not fit"):
        load_checkpoint(tmp_path / "tampered.pth")


def test_unknown_backbone_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="unknown backbone"):
        build_segmenter("resnet18", 3)


def test_mobilenet_v3_large_backbone_is_deeplabv3plus_at_output_stride_16() -> None:
    torch.manual_seed(0)
    m = build_segmenter("mobilenet_v3_large", 5).eval()
    x = torch.randn(1, 3, 97, 129)
    with torch.no_grad():
        c1, c4 = m.backbone.base_forward(x)
        out = m(x)
    assert c1.shape == (1, 24, 25, 33) and c4.shape == (1, 960, 7, 9)  # strides 4 and 16 (dilated C5)
    assert out.shape == (1, 5, 97, 129)
    assert m.head.b0[0].in_channels == 960 and m.reduce[0].in_channels == 24
    n = sum(p.numel() for p in m.backbone.parameters())
    assert 2.9e6 < n < 3.0e6  # torchvision MobileNetV3-Large features (2.97 M)
