"""Issue 22 item 5 for SAM 2: the speed levers are used only where exactness is not promised. The torch
backend binds ``sam2_decoder_batched`` with ``share_image`` (the image-side work once per call, within
1e-5 of upstream's tiled decoder) only under autocast; at fp32 it binds the tiled decoder, which is
upstream's exactly (``test_label_fp32_is_sam2_automatic_mask_generator_exactly``); ``compile`` reaches
the SAM 2 engines only when resolved on, and ``auto`` on a CPU resolves to fp32 eager."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch

pytest.importorskip("sam2", reason="the [sam2] extra is not installed")

from zsplg_fast.config import load_config
from zsplg_fast.labeling.build import resolve_run_config
from zsplg_fast.labeling.engines import label_engines

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def tiny2(sam2_tiny_ckpt: Path) -> torch.nn.Module:
    from zsplg_fast.models import build_sam

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return build_sam("sam2_tiny", str(sam2_tiny_ckpt))


def _cfg(**over: object):
    return load_config(overrides={"sam.variant": "sam2_tiny", "label.device": "cpu", **over})


def test_fp32_binds_the_exact_decoder_and_bf16_the_shared_one(
    tiny2: torch.nn.Module, monkeypatch: pytest.MonkeyPatch
) -> None:
    eng = label_engines(_cfg(**{"label.precision": "fp32"}), tiny2, torch.nn.Identity(), {}, CPU)
    assert eng.family == "sam2" and eng.describe["autocast"] == "fp32"
    assert eng.decoder.name == "sam2_decoder_batched" and eng.decoder.module.share_image is False
    # a CPU with native bf16 (AMX / AVX512-BF16): autocast, and the decoder shares the image-side work
    monkeypatch.setattr("zsplg_fast.utils.cpu.cpu_bf16_flags", lambda *a, **k: ["amx_bf16"])
    eng = label_engines(_cfg(**{"label.precision": "bf16"}), tiny2, torch.nn.Identity(), {}, CPU)
    assert eng.describe["autocast"] == "bf16" and eng.decoder.module.share_image is True
    assert eng.decoder_meta is not None and eng.decoder_meta["dynamic_multimask_stability_thresh"] == 0.98


def test_compile_reaches_the_sam2_engines_only_when_on(
    tiny2: torch.nn.Module, monkeypatch: pytest.MonkeyPatch
) -> None:
    compiled: list[torch.nn.Module] = []
    monkeypatch.setattr(torch, "compile", lambda m, **k: compiled.append(m) or m.forward)
    for mode, on in (("on", True), ("off", False)):
        cfg = _cfg(**{"label.precision": "fp32", "label.compile": mode})
        eng = label_engines(cfg, tiny2, torch.nn.Identity(), {}, CPU)
        assert eng.describe["compile"] is on
        assert (eng.encoder._run is not eng.encoder.module) is on
    assert [type(m).__name__ for m in compiled] == ["Sam2Encoder", "Sam2DecoderBatched"]
    resolved, mode = resolve_run_config(_cfg(), n_images=10_000)  # auto on a CPU: exact fp32, eager
    assert (resolved.label.precision, resolved.label.compile, mode.compile) == ("fp32", "off", False)
