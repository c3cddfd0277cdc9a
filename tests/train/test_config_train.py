"""The train config: presets match UniMatch's configs, validation, lr scaling and the poly schedule."""

from __future__ import annotations

from pathlib import Path

import pytest

from zsplg_fast.cli.train import preset
from zsplg_fast.config import load_config
from zsplg_fast.errors import ConfigError
from zsplg_fast.models.segmenter import build_segmenter
from zsplg_fast.train.common import make_optimizer, poly_lr, resolve_classes


def test_pascal_preset_matches_upstream() -> None:
    t = load_config(preset("pascal")).train
    assert (t.data.crop_size, t.unimatch.epochs, t.unimatch.batch_size) == (321, 80, 2)
    assert (t.optim.lr, t.optim.lr_multi, t.unimatch.conf_thresh) == (0.001, 10.0, 0.95)
    assert (t.optim.momentum, t.optim.weight_decay, t.optim.poly_power) == (0.9, 1e-4, 0.9)
    assert t.model.backbone == "resnet101" and t.model.dilations == [6, 12, 18]
    assert t.model.replace_stride_with_dilation == [False, False, True]
    assert len(resolve_classes(t.data.classes)) == 21 and t.eval.mode == "original"


def test_coco_preset_matches_upstream() -> None:
    t = load_config(preset("coco")).train
    assert (t.data.crop_size, t.unimatch.epochs, t.optim.lr) == (513, 30, 0.004)
    assert len(resolve_classes(t.data.classes)) == 81


def test_bad_keys_and_values_are_refused() -> None:
    with pytest.raises(ConfigError, match="conf_thresh"):
        load_config(None, {"train.unimatch.conf_tresh": 0.9})
    with pytest.raises(ConfigError, match="online, two_stage, none"):
        load_config(None, {"train.unimatch.fusion": "both"})
    with pytest.raises(ConfigError, match="three rates"):
        load_config(None, {"train.model.dilations": [6, 12]})
    with pytest.raises(ConfigError, match="resnet50, resnet101, mobilenet_v3_large, tiny"):
        load_config(None, {"train.model.backbone": "vgg"})
    with pytest.raises(ConfigError, match="no such file or preset"):
        preset("imagenet")
    with pytest.raises(ConfigError, match="scale_range"):
        load_config(None, {"train.data.scale_range": [2.0, 1.0]})


def test_a_preset_typo_gets_a_did_you_mean(tmp_path: Path) -> None:
    """As config keys do: the closest preset name, and the presets listed; a YAML path's typo names the
    closest file beside it."""
    with pytest.raises(
        ConfigError, match=r"valid: a YAML path, or a preset: coco, pascal, tiny.*did you mean 'pascal'\?"
    ):
        preset("pascl")
    with pytest.raises(ConfigError, match="did you mean 'coco'"):
        preset("coco.yaml")  # a preset name with the file suffix
    with pytest.raises(ConfigError) as err:
        preset("imagenet")
    assert "did you mean" not in str(err.value)  # nothing close: no guess
    (tmp_path / "mine.yaml").write_text("train: {}\n")
    with pytest.raises(ConfigError, match=rf"config file not found; did you mean '{tmp_path / 'mine.yaml'}'"):
        load_config(tmp_path / "mnie.yaml")


def test_lr_scales_with_world_and_batch_and_head_is_x10() -> None:
    t = load_config(preset("pascal")).train
    model = build_segmenter("tiny", 3)
    for world, want in ((4, 0.001), (1, 0.00025), (8, 0.002)):
        opt, lr = make_optimizer(t, model, world, batch=2)
        assert lr == pytest.approx(want)
        assert [g["lr"] for g in opt.param_groups] == pytest.approx([want, 10 * want])
        assert opt.defaults["momentum"] == 0.9 and opt.defaults["weight_decay"] == 1e-4


def test_poly_schedule() -> None:
    assert poly_lr(0.01, 0, 100, 0.9) == 0.01
    assert poly_lr(0.01, 50, 100, 0.9) == pytest.approx(0.01 * 0.5**0.9)
    assert poly_lr(0.01, 100, 100, 0.9) == 0.0


def test_classes() -> None:
    assert resolve_classes("voc")[:2] == ["background", "aeroplane"]
    assert resolve_classes("3") == ["0", "1", "2"]
    assert resolve_classes("auto", ["bg", "a|alias"]) == ["bg", "a"]
    with pytest.raises(ConfigError, match=r"classes\.txt"):
        resolve_classes("auto", None)


def test_tiny_preset_loads() -> None:
    t = load_config(preset("tiny")).train
    assert t.model.backbone == "tiny" and t.unimatch.max_iters == 300 and t.optim.lr_scaling == "none"
