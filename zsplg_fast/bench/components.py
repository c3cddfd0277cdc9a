"""The benchmark's rows: each component expands into cases (sizes, batches) from the bench config.

Engine components run an export spec's graph on every backend with the same feeds:
``sam_encoder`` (1, 3, S, S); ``sam_decoder_batched`` at B prompt sets of one point against one
embedding (AMG's call); ``clip_dense`` at each size; ``clip_text`` on a batch of tokenised prompts;
``segmenter`` at each input size. Pipeline components time what a user runs: ``labeling`` (one image
through the labeler built by :func:`zsplg_fast.labeling.build.build_labeler`: AMG + dense CLIP +
painting) and ``segmenter_image`` (decode a file → normalise → segmenter → argmax, the code ``infer``
runs).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from zsplg_fast.bench.cases import BenchContext, Case, Feeds, NotApplicable
from zsplg_fast.config.bench import parse_size


def _randn(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def _sam_encoder(ctx: BenchContext) -> list[Case]:
    from zsplg_fast.models import sam_info

    s = sam_info(ctx.model("sam").model).img_size
    return [
        Case(
            "sam_encoder",
            f"sam_encoder {ctx.cfg.sam.variant} 1x3x{s}x{s}",
            "sam",
            "image",
            1,
            spec="sam_encoder",
            feeds=lambda p: {"image": _randn((1, 3, s, s))},
            axes={"batch": 1},
        )
    ]


def _decoder_feeds(b: int) -> Callable[[Any], Feeds]:
    def make(p: Any) -> Feeds:
        emb = next(t for t in p.inputs if t.name == "image_embeddings")
        size = float(p.metadata.get("input_size", 1024))
        g = np.random.default_rng(b)
        return {
            "image_embeddings": _randn(tuple(int(d) for d in emb.shape)),
            "point_coords": (g.random((b, 1, 2)) * size).astype(np.float32),
            "point_labels": np.ones((b, 1), np.float32),
        }

    return make


def _sam_decoder_batched(ctx: BenchContext) -> list[Case]:
    return [
        Case(
            "sam_decoder_batched",
            f"sam_decoder_batched {ctx.cfg.sam.variant} B={b}",
            "sam",
            "prompt set",
            b,
            spec="sam_decoder_batched",
            feeds=_decoder_feeds(b),
            axes={"batch": b, "num_points": 1},
            notes="one point per prompt set, one shared 1x256x64x64 embedding (AMG's call)",
        )
        for b in ctx.bench.decoder_batches
    ]


def _clip_dense(ctx: BenchContext) -> list[Case]:
    c = ctx.cfg.clip
    gem = {"gem_depth": c.gem_depth, "gem_temperature": c.gem_temperature, "gem_iters": c.gem_iters}
    return [
        Case(
            "clip_dense",
            f"clip_dense {c.model} {s}x{s}",
            "clip",
            "image",
            1,
            spec="clip_dense",
            options={"image_size": s, **gem},
            feeds=lambda p, s=s: {"image": _randn((1, 3, s, s))},
            axes={"batch": 1},
            notes=f"GEM depth {c.gem_depth}",
        )
        for s in ctx.bench.clip_sizes
    ]


def _clip_text(ctx: BenchContext) -> list[Case]:
    from zsplg_fast.models import VOC_CLASSES

    n = ctx.bench.text_batch
    bundle = ctx.model("clip").model
    names = [syn[0] for syn in VOC_CLASSES]
    prompts = [f"a photo of a {names[i % len(names)]}." for i in range(n)]
    tokens = bundle.tokenizer(prompts).numpy().astype(np.int64)
    return [
        Case(
            "clip_text",
            f"clip_text {ctx.cfg.clip.model} B={n}",
            "clip",
            "text",
            n,
            spec="clip_text",
            feeds=lambda p: {"token_ids": tokens},
            axes={"batch": n},
            notes="VOC class prompts, 'a photo of a {}.'",
        )
    ]


def _segmenter_name(ctx: BenchContext) -> str:
    b = ctx.bench
    return "segmenter (checkpoint)" if b.segmenter_checkpoint else f"DeepLabV3+ {b.segmenter_backbone}"


def _segmenter(ctx: BenchContext) -> list[Case]:
    cases = []
    for item in ctx.bench.segmenter_sizes:
        h, w = parse_size(item, "bench.segmenter_sizes")
        cases.append(
            Case(
                "segmenter",
                f"segmenter {_segmenter_name(ctx)} 1x3x{h}x{w}",
                "segmenter",
                "image",
                1,
                spec="segmenter",
                feeds=lambda p, h=h, w=w: {"image": _randn((1, 3, h, w))},
                axes={"batch": 1, "height": h, "width": w},
            )
        )
    return cases


def _segmenter_image_runner(backend: str, ctx: BenchContext) -> Callable[[], Any]:
    from zsplg_fast.bench.backends import build_engine_for
    from zsplg_fast.bench.segmenter import EngineSegmenter, predict_label
    from zsplg_fast.data import load_image

    path = ctx.image_path()
    h, w = load_image(path).shape[:2]
    case = Case("segmenter", "segmenter@image", "segmenter", "image", 1, spec="segmenter")
    case.axes = {"batch": 1, "height": h, "width": w}
    case.feeds = lambda p: {"image": _randn((1, 3, h, w))}
    ec = ctx.engine_case(case)
    engine = build_engine_for(backend, ec, ctx.bench.device, ctx.bench.threads)
    model = EngineSegmenter(engine, int(ec.prepared().outputs[0].shape[1]))
    return lambda: predict_label(model, load_image(path))


def _segmenter_image(ctx: BenchContext) -> list[Case]:
    h, w = ctx.image().shape[:2]
    return [
        Case(
            "segmenter_image",
            f"segmenter_image {_segmenter_name(ctx)} {h}x{w} file",
            "segmenter",
            "image",
            1,
            runner=_segmenter_image_runner,
            notes="decode → ImageNet normalise → logits → argmax, as `infer` and `evaluate`",
        )
    ]


LABEL_PROMPT_BATCH = 64  # decoder prompt sets per call in the labeling case (the TensorRT profile's opt)


def _labeling_engines(backend: str, ctx: BenchContext) -> tuple[Any, Any, Any]:
    """(sam_encoder, sam_decoder_batched, clip_dense) engines of ``backend`` for the labeling case,
    sharing the other cases' exports (same specs, options and weights)."""
    from zsplg_fast.bench.backends import build_engine_for

    c = ctx.cfg.clip
    gem = {"gem_depth": c.gem_depth, "gem_temperature": c.gem_temperature, "gem_iters": c.gem_iters}
    size = ctx.model("sam").model.image_encoder.img_size
    specs = (
        Case("labeling", "enc", "sam", "image", 1, spec="sam_encoder", axes={"batch": 1}),
        Case(
            "labeling",
            "dec",
            "sam",
            "prompt set",
            LABEL_PROMPT_BATCH,
            spec="sam_decoder_batched",
            feeds=_decoder_feeds(LABEL_PROMPT_BATCH),
            axes={"batch": LABEL_PROMPT_BATCH, "num_points": 1},
        ),
        Case(
            "labeling",
            "clip",
            "clip",
            "image",
            1,
            spec="clip_dense",
            options={"image_size": c.image_size, **gem},
            axes={"batch": 1},
        ),
    )
    specs[0].feeds = lambda p: {"image": _randn((1, 3, size, size))}
    specs[2].feeds = lambda p: {"image": _randn((1, 3, c.image_size, c.image_size))}
    return tuple(
        build_engine_for(backend, ctx.engine_case(k), ctx.bench.device, ctx.bench.threads) for k in specs
    )


def _amg(ctx: BenchContext) -> Any:
    """AMG settings of the labeling case: the configured ones, ``bench.grid`` points per side, and
    thresholds 0 so random weights keep their masks (shared measurements)."""
    from dataclasses import replace

    return replace(
        ctx.cfg.amg, points_per_side=ctx.bench.grid, pred_iou_thresh=0.0, stability_score_thresh=0.0
    )


def _labeling_runner(backend: str, ctx: BenchContext) -> Callable[[], Any]:
    """Our labeling pipeline (engine AMG + dense CLIP + mask pooling, the labeling benchmark's
    ``EnginePipeline``) on ``backend``'s engines; without it, the configured labeler on torch only."""
    try:
        from zsplg_fast.bench.labeling_pipelines import EnginePipeline, Models
    except ImportError:
        return _labeler_runner(backend, ctx)
    from zsplg_fast.models import DenseClip

    enc, dec, dense = _labeling_engines(backend, ctx)
    clip = ctx.model("clip").model
    models = Models(
        ctx.model("sam").model, clip, DenseClip.from_bundle(clip, ctx.cfg.clip), ctx.cfg.clip.image_size
    )
    pipe = EnginePipeline(enc, dec, dense, None, models, _amg(ctx), prompt_batch=LABEL_PROMPT_BATCH)
    image = ctx.image()
    return lambda: pipe(image)


def _labeler_runner(backend: str, ctx: BenchContext) -> Callable[[], Any]:
    """Fallback: ``build_labeler(cfg)`` (mask source as configured) on the torch backend."""
    import copy

    import torch

    from zsplg_fast.config import to_dict
    from zsplg_fast.labeling.build import build_labeler

    if backend != "torch":
        raise NotApplicable("the labeler built by build_labeler runs on torch only here (no engine pipeline)")
    cfg = copy.deepcopy(ctx.cfg)
    cfg.amg = _amg(ctx)
    torch.manual_seed(0)
    built = build_labeler(cfg)
    ctx.note_weights("labeling", {**built.manifest["weights"], "amg": to_dict(cfg.amg)})
    image = ctx.image()
    return lambda: built.labeler(image)


def _labeling(ctx: BenchContext) -> list[Case]:
    h, w = ctx.image().shape[:2]
    c, g = ctx.cfg, ctx.bench.grid
    return [
        Case(
            "labeling",
            f"labeling {c.sam.variant} + {c.clip.model} {h}x{w} grid {g}x{g}",
            "labeling",
            "image",
            1,
            runner=_labeling_runner,
            notes=(
                f"engine AMG {g}x{g} points, {LABEL_PROMPT_BATCH} prompts per decoder call, thresholds 0 "
                f"(random weights); GEM dense CLIP {c.clip.image_size}; mask pooling"
            ),
        )
    ]


COMPONENTS: dict[str, Callable[[BenchContext], list[Case]]] = {
    "sam_encoder": _sam_encoder,
    "sam_decoder_batched": _sam_decoder_batched,
    "clip_dense": _clip_dense,
    "clip_text": _clip_text,
    "segmenter": _segmenter,
    "labeling": _labeling,
    "segmenter_image": _segmenter_image,
}
# which model family each component needs (cases run family by family, models freed in between)
FAMILY: dict[str, str] = {
    "sam_encoder": "sam",
    "sam_decoder_batched": "sam",
    "clip_dense": "clip",
    "clip_text": "clip",
    "segmenter": "segmenter",
    "segmenter_image": "segmenter",
    "labeling": "labeling",
}
