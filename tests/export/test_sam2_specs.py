"""sam2_encoder / sam2_decoder / sam2_decoder_batched: upstream's SAM2ImagePredictor numbers, exported,
validated against PyTorch, and run on the onnxruntime and torch engines through the same Engine API."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

pytest.importorskip(
    "sam2",
    reason="the [sam2] extra is not installed (SAM2_BUILD_CUDA=0 pip install --no-build-isolation sam2)",
)

from zsplg_fast.engines.base import load_engine
from zsplg_fast.export.onnx import export_onnx
from zsplg_fast.export.specs import family_specs, get_spec
from zsplg_fast.export.specs.sam2_decoder import (
    Sam2Decoder,
    Sam2DecoderBatched,
    dynamic_multimask,
)
from zsplg_fast.export.specs.sam2_encoder import ENCODER_OUTPUTS, Sam2Encoder

pytestmark = pytest.mark.filterwarnings(
    "ignore::UserWarning", "ignore::DeprecationWarning", "ignore::FutureWarning"
)


@pytest.fixture(scope="module")
def tiny2(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, dict[str, Any]]:
    """SAM 2 tiny (Hiera embed 32, 256 px) saved in the official layout, loaded back as an export source."""
    from zsplg_fast.export.sources import load_sam
    from zsplg_fast.models import build_sam, save_sam_checkpoint

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.manual_seed(3)
        path = save_sam_checkpoint(build_sam("sam2_tiny"), tmp_path_factory.mktemp("w") / "sam2_tiny.pt")
    src = load_sam("sam2_tiny", path)
    return src.model, src.record


def _predictor(model: Any, image: np.ndarray) -> Any:
    from sam2.sam2_image_predictor import SAM2ImagePredictor

    pred = SAM2ImagePredictor(model)
    g = model.sam_image_embedding_size
    pred._bb_feat_sizes = [(4 * g, 4 * g), (2 * g, 2 * g), (g, g)]  # upstream hard-codes 1024's sizes
    pred.set_image(image)
    return pred


@torch.inference_mode()
def test_modules_give_upstream_predictor_numbers(tiny2: tuple[Any, dict[str, Any]]) -> None:
    model, _ = tiny2
    image = np.random.default_rng(0).integers(0, 256, (150, 230, 3), dtype=np.uint8)
    pred = _predictor(model, image)
    x = pred._transforms(image)[None]
    ours = dict(zip(ENCODER_OUTPUTS, Sam2Encoder(model)(x), strict=True))
    assert torch.equal(ours["image_embed"], pred._features["image_embed"])
    for i in (0, 1):
        assert torch.equal(ours[f"high_res_feats_{i}"], pred._features["high_res_feats"][i])
    s = model.image_size
    gen = torch.Generator().manual_seed(1)
    coords = torch.rand(5, 2, 2, generator=gen) * s
    labels = torch.tensor([[1, 0], [1, 1], [0, 1], [1, 1], [1, 0]], dtype=torch.int32)
    low_in = torch.randn(5, 1, 4 * model.sam_image_embedding_size, 4 * model.sam_image_embedding_size) * 8
    no_mask = torch.zeros_like(low_in)
    batched = Sam2DecoderBatched(model)
    # AMG's first pass: B prompt sets, three masks each
    m, iou, _ = pred._predict(coords, labels, multimask_output=True, return_logits=True)
    all_m, all_iou = batched(**ours, point_coords=coords, point_labels=labels.float(), mask_input=no_mask,
                             has_mask_input=torch.zeros(1))  # fmt: skip
    assert all_m.shape[1] == 4
    full = torch.nn.functional.interpolate(all_m[:, 1:], (150, 230), mode="bilinear", align_corners=False)
    assert torch.equal(full, m) and torch.equal(all_iou[:, 1:], iou)
    # the m2m step: a mask prompt per set, one mask each (dynamic multimask via stability)
    m, iou, low = pred._predict(coords, labels, mask_input=low_in, multimask_output=False, return_logits=True)
    all_m, all_iou = batched(**ours, point_coords=coords, point_labels=labels.float(), mask_input=low_in,
                             has_mask_input=torch.ones(1))  # fmt: skip
    md = model.sam_mask_decoder
    one, one_iou = dynamic_multimask(
        all_m, all_iou, md.dynamic_multimask_stability_delta, md.dynamic_multimask_stability_thresh
    )
    assert torch.equal(torch.clamp(one, -32, 32), low) and torch.equal(one_iou, iou)
    # the point interface, one set, both output modes, masks at the image size
    for multi in (True, False):
        m, iou, low = pred._predict(coords[:1], labels[:1], mask_input=low_in[:1], multimask_output=multi,
                                    return_logits=True)  # fmt: skip
        masks, iou2, low2 = Sam2Decoder(model, multimask_output=multi)(
            **ours, point_coords=coords[:1], point_labels=labels[:1].float(), mask_input=low_in[:1],
            has_mask_input=torch.ones(1), orig_im_size=torch.tensor([150.0, 230.0]),
        )  # fmt: skip
        assert masks.shape == (1, 3 if multi else 1, 150, 230)
        assert torch.equal(masks, m) and torch.equal(iou2, iou) and torch.equal(low2, low)


@pytest.mark.parametrize("name", ["sam2_encoder", "sam2_decoder", "sam2_decoder_batched"])
def test_export_validates_and_runs_on_ort_and_torch_engines(
    tiny2: tuple[Any, dict[str, Any]], tmp_path: Path, name: str
) -> None:
    model, record = tiny2
    assert name in {s.name for s in family_specs("sam2")}
    p = get_spec(name).bind(model)
    # legacy here for CI time (the encoder's default is dynamo: the same parity, 28 s on this model)
    art = export_onnx(p, tmp_path, exporter="legacy", source=record)
    side = art.sidecar
    assert side["validation"]["passed"] and side["validation"]["sets"] == len(p.validation)
    assert side["source"]["family"] == "sam2" and side["source"]["variant"] == "sam2_tiny"
    assert (tmp_path / f"{name}.json").is_file()
    feeds = {k: v.numpy() for k, v in p.validation[-1].items()}
    with torch.inference_mode():
        ref = p.module(**p.validation[-1])
    ref = dict(zip([o.name for o in p.outputs], ref, strict=True))
    for backend in ("ort", "torch"):
        out = load_engine(art.path, backend=backend)(feeds)
        for key, want in ref.items():
            np.testing.assert_allclose(
                np.asarray(out[key]), want.numpy(), atol=1e-4, err_msg=f"{backend} {key}"
            )


def test_shared_image_decoder_matches_the_tiled_one(
    tiny2: tuple[Any, dict[str, Any]], tmp_path: Path
) -> None:
    """share_image (the speed lever under autocast): the image embedding is never tiled per prompt; same
    numbers as upstream's tiled predict_masks within 1e-5, first pass and m2m, and it exports."""
    model, _ = tiny2
    p = get_spec("sam2_decoder_batched").bind(model, share_image=True)
    assert p.module.share_image and p.options == {
        "share_image": True,
        "token_upscaling": True,
        "scale_first": True,
        "folded": False,
    }
    tiled = Sam2DecoderBatched(model)
    with torch.inference_mode():
        for feeds in p.validation:
            for a, b in zip(p.module(**feeds), tiled(**feeds), strict=True):
                assert float((a - b).abs().max()) <= 1e-5
    art = export_onnx(p, tmp_path, exporter="legacy")
    assert art.sidecar["validation"]["passed"] and art.sidecar["spec_options"] == {
        "share_image": True,
        "token_upscaling": True,
        "scale_first": True,
        "folded": False,
    }
