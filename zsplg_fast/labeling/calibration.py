"""int8 calibration feeds for an exported artifact, made from images the way labeling feeds its engines.

``zsplg-fast build --precision int8 --calib SOURCE --calib-images N`` calls :func:`calibration_feeds`:
static QDQ needs each artifact's inputs *as they are at inference time*, and a SAM decoder's inputs are
the encoder's embeddings and the AMG's prompt batches, not images. So the fp32 artifacts beside the one
being quantized (``sam_encoder.onnx``, ``sam_decoder_batched.onnx`` or the shared pair, for SAM 2
``sam2_encoder.onnx`` + ``sam2_decoder_batched.onnx``, ``clip_dense.onnx``: one export folder) run the
fast mask generator on onnxruntime CPU over the images (at the label config's working resolution, AMG
settings and prompt batch), and every engine records the feeds it is called with
(:class:`RecordingEngine`); the requested artifact's recorded feeds are the calibration data.
``clip_dense`` gets CLIP-preprocessed images (mean / std from its sidecar), the ``segmenter``
ImageNet-normalised images (as ``infer``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from zsplg_fast.config import Config
from zsplg_fast.errors import ConfigError, DatasetError

SAM_SPECS = ("sam_encoder", "sam_decoder", "sam_decoder_batched", "sam_decoder_image", "sam_decoder_shared")
SAM2_SPECS = ("sam2_encoder", "sam2_decoder", "sam2_decoder_batched")
Feeds = dict[str, np.ndarray]


class RecordingEngine:
    """Wraps an Engine; keeps copies of the first ``keep`` feeds (numpy) it is called with."""

    def __init__(self, engine: Any, keep: int) -> None:
        self.engine, self.keep = engine, keep
        self.feeds: list[Feeds] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.engine, name)

    def __call__(self, feeds: Mapping[str, Any]) -> dict[str, Any]:
        if len(self.feeds) < self.keep:
            self.feeds.append({k: np.array(np.asarray(v), copy=True) for k, v in feeds.items()})
        return self.engine(feeds)


def calibration_images(source: str, split: str | None, count: int) -> list[np.ndarray]:
    """The first ``count`` images ((H, W, 3) uint8 RGB) of a dataset ``KIND:DIR`` (a bare folder is
    ``folder:DIR``). Raises :class:`DatasetError` naming the source when it has no image."""
    from zsplg_fast.data import load_image, open_source

    spec = source if ":" in source and not Path(source).exists() else f"folder:{source}"
    samples = list(open_source(spec, split).samples)[: max(1, count)]
    if not samples:
        raise DatasetError(source, f"no images for int8 calibration (split {split!r})")
    return [load_image(s.image_path) for s in samples]


def _ort(path: Path) -> Any:
    from zsplg_fast.engines.base import load_engine

    return load_engine(path, backend="ort", providers=["cpu"])


SINGLE_PROMPT_DECODERS = ("sam_decoder", "sam2_decoder")
"""Point-interface decoders: the labeler never runs them, so they have no recorded inputs."""


def _sam_feeds(
    folder: Path, spec: str, images: Sequence[np.ndarray], cfg: Config, keep: int, family: str = "sam"
) -> list[Feeds]:
    """Run the fast AMG on the fp32 artifacts of proposer ``family`` in ``folder`` (its encoder and the
    decoder set that holds ``spec``; for the encoder, the first set whose decoder is there, as labeling
    picks them); the feeds ``spec`` saw. SAM 2: ``sam2_encoder`` + ``sam2_decoder_batched``, with the
    decoder sidecar's dynamic multimask settings and the AMG's m2m / mask-threshold settings."""
    import torch

    from zsplg_fast.export.artifact import read_sidecar
    from zsplg_fast.labeling.amg import MaskGenerator
    from zsplg_fast.labeling.engines import FAMILY_ARTIFACTS
    from zsplg_fast.labeling.labeler import to_working
    from zsplg_fast.labeling.proposers import make_proposer

    arts = FAMILY_ARTIFACTS[family]
    if spec in SINGLE_PROMPT_DECODERS:
        raise ConfigError(
            "build --calib",
            spec,
            "the single-prompt decoder is not run by the labeler, so it has no recorded inputs",
            valid=", ".join(n for n in (arts.encoder, *sum(arts.decoders, ())) if n != spec),
        )
    decoders = next((d for d in arts.decoders if spec in d), None) or next(
        (d for d in arts.decoders if (folder / f"{d[0]}.onnx").is_file()), arts.decoders[-1]
    )
    names = [arts.encoder, *decoders]
    missing = [n for n in names if not (folder / f"{n}.onnx").is_file()]
    if missing:
        raise ConfigError(
            "build --calib",
            str(folder),
            f"int8 calibration of {spec} runs the fp32 SAM artifacts beside it; missing "
            + ", ".join(f"{n}.onnx" for n in missing),
            valid="zsplg-fast export sam (into the same folder)",
        )
    eng = {n: RecordingEngine(_ort(folder / f"{n}.onnx"), keep) for n in names}
    gen = MaskGenerator(
        eng[arts.encoder],
        eng[decoders[0]],
        cfg.amg,
        decoder_image=eng[decoders[1]] if len(decoders) > 1 else None,
        prompt_batch=cfg.label.prompt_batch,
        proposer=make_proposer(family, cfg.amg, read_sidecar(folder / f"{decoders[0]}.onnx")),
        mask_threshold=cfg.amg.mask_threshold,
    )
    with torch.no_grad():
        for image in images:
            gen(to_working(image, cfg.label.work_long_side))
    return eng[spec].feeds


def _clip_feeds(side: Mapping[str, Any], images: Sequence[np.ndarray], cfg: Config) -> list[Feeds]:
    from zsplg_fast.labeling.classify import clip_preprocess

    pre = side.get("preprocessing", {})
    size = int(side["inputs"][0]["shape"][-1])
    return [
        {"image": clip_preprocess(im, size, pre["mean"], pre["std"]).numpy().astype(np.float32)}
        for im in images
    ]


def _segmenter_feeds(images: Sequence[np.ndarray]) -> list[Feeds]:
    from PIL import Image

    from zsplg_fast.train import transforms as T

    return [{"image": T.normalize(Image.fromarray(im)).unsqueeze(0).numpy()} for im in images]


FeedMaker = Callable[[Path, Mapping[str, Any], Sequence[np.ndarray], Config, int], list[Feeds]]
FEED_MAKERS: dict[str, FeedMaker] = {
    **{s: (lambda p, side, ims, cfg, keep, s=s: _sam_feeds(p.parent, s, ims, cfg, keep)) for s in SAM_SPECS},
    **{
        s: (lambda p, side, ims, cfg, keep, s=s: _sam_feeds(p.parent, s, ims, cfg, keep, "sam2"))
        for s in SAM2_SPECS
    },
    "clip_dense": lambda p, side, ims, cfg, keep: _clip_feeds(side, ims, cfg),
    "segmenter": lambda p, side, ims, cfg, keep: _segmenter_feeds(ims),
    "sam_encoder_preprocess": lambda p, side, ims, cfg, keep: [],  # nothing is quantized in it
}


def calibration_feeds(
    onnx_path: str | Path, images: Sequence[np.ndarray], cfg: Config, max_feeds: int = 64
) -> list[Feeds]:
    """int8 calibration feeds of an fp32 artifact (see the module docstring).

    Args:
        onnx_path: ``export/<spec>.onnx`` with its sidecar.
        images: (H, W, 3) uint8 RGB calibration images.
        cfg: the label config (AMG settings, prompt batch, working resolution).
        max_feeds: at most this many feeds (a SAM decoder sees many prompt batches per image).
    Returns:
        Feeds dicts (input name → array) as the artifact receives them at labeling time.
    Raises:
        ConfigError: a spec without an image calibration (``clip_text``), or the fp32 SAM artifacts it
            needs are not beside it.
    """
    from zsplg_fast.export.artifact import read_sidecar

    path = Path(onnx_path)
    side = read_sidecar(path)
    spec = str(side.get("spec", ""))
    if spec not in FEED_MAKERS:
        raise ConfigError(
            "build --calib",
            f"{path.name} ({spec or 'no spec'})",
            "no image calibration for this artifact (text is embedded once per class list: keep it fp32)",
            valid=", ".join(FEED_MAKERS),
        )
    return FEED_MAKERS[spec](path, side, images, cfg, max_feeds)[:max_feeds]
