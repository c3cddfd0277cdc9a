"""The mask generator on the shared decoder pair (sam_decoder_image once per crop + sam_decoder_shared):
upstream's masks exactly, on trained weights (the shipped toy SAM); the torch precision rules."""

from __future__ import annotations

import pytest
import torch

from zsplg_fast.config import AmgConfig
from zsplg_fast.errors import ConfigError

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


@torch.inference_mode()
def test_amg_on_shared_decoder_equals_upstream_on_toy_sam() -> None:
    from segment_anything import SamAutomaticMaskGenerator

    from zsplg_fast.engines.torch_engine import TorchEngine
    from zsplg_fast.export.specs import get_spec
    from zsplg_fast.labeling.amg import MaskGenerator
    from zsplg_fast.labeling.masks import MaskSet
    from zsplg_fast.models import build_sam
    from zsplg_fast.toy.evaluate import held_out
    from zsplg_fast.toy.registry import register

    register()
    sam = build_sam("toy")
    engines = {}
    for name in ("sam_encoder", "sam_decoder_image", "sam_decoder_shared"):
        p = get_spec(name).bind(sam, **({"validation_batches": (1,)} if name == "sam_encoder" else {}))
        engines[name] = TorchEngine(p.module, p.inputs, p.outputs)
    kw = {"points_per_side": 6, "pred_iou_thresh": 0.0, "stability_score_thresh": 0.0}
    image = held_out(1)[0].image
    gen = MaskGenerator(
        engines["sam_encoder"],
        engines["sam_decoder_shared"],
        AmgConfig(**kw),
        decoder_image=engines["sam_decoder_image"],
        prompt_batch=16,  # 3 decoder calls share one sam_decoder_image run
    )
    ours = gen.generate_tensors(image).masks.cpu()
    ref = MaskSet.from_records(SamAutomaticMaskGenerator(sam, **kw).generate(image), image.shape[:2]).masks
    assert len(ref) >= 20 and len(ours) == len(ref)  # trained weights: tens of distinct masks
    key = lambda m: m.flatten().to(torch.uint8).numpy().tobytes()  # noqa: E731
    assert sorted(map(key, ours)) == sorted(map(key, ref))  # the same masks, pixel for pixel


def test_torch_precision_rules(monkeypatch: pytest.MonkeyPatch) -> None:
    from zsplg_fast.labeling import engines
    from zsplg_fast.utils import cpu

    cpu_dev, cuda_dev = torch.device("cpu"), torch.device("cuda")
    assert engines.torch_autocast("fp32", cpu_dev) == "fp32"
    assert engines.torch_autocast("fp16", cuda_dev) == "fp16"
    assert engines.torch_autocast("bf16", cuda_dev) == "bf16"
    with pytest.raises(ConfigError, match="fp16"):
        engines.torch_autocast("fp16", cpu_dev)
    monkeypatch.setattr(cpu, "cpu_bf16_flags", lambda *a: ["avx512_bf16"])
    assert engines.torch_autocast("bf16", cpu_dev) == "bf16"
    monkeypatch.setattr(cpu, "cpu_bf16_flags", lambda *a: [])
    with pytest.raises(ConfigError, match="no native bf16"):
        engines.torch_autocast("bf16", cpu_dev)


def test_cpu_flags_read_from_cpuinfo(tmp_path) -> None:
    from zsplg_fast.utils.cpu import cpu_bf16_flags, cpu_flags

    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx512f avx512_bf16\n\nprocessor\t: 1\n")
    assert "avx512f" in cpu_flags(info) and cpu_bf16_flags(info) == ["avx512_bf16"]
    info.write_text("flags\t\t: fpu sse2 avx2\n")
    assert cpu_bf16_flags(info) == [] and cpu_flags(tmp_path / "missing") == set()
