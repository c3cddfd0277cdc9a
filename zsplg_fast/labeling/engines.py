"""The engines the fast labeler runs on, by backend (a registry, no if/elif).

- ``torch``: the export specs' own modules in-process (``TorchEngine``), with fp16/bf16 autocast on CUDA.
- ``ort``: the exported ONNX artifacts (``<dir>/<name>.onnx``, ``<name>.int8.onnx`` for int8) in
  onnxruntime, CUDA provider when the device is a GPU.
- ``trt``: TensorRT plans (``<dir>/<name>.<precision>.plan``) built by ``zsplg-fast build``.

Artifacts are checked against the configured weights (sidecar ``source.weights``) and, for CLIP, the
dense settings, so a label run never silently mixes models.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from zsplg_fast.config import Config
from zsplg_fast.engines.base import Engine, load_engine
from zsplg_fast.errors import CheckpointError, ConfigError, EngineIncompatibleError

log = logging.getLogger(__name__)


@dataclass
class LabelEngines:
    """Encoder and batched decoder for the AMG, and the dense CLIP callable for the classifier.
    ``decoder_image`` (``sam_decoder_image``) is set when ``decoder`` is ``sam_decoder_shared``.
    ``family`` is the proposer family (``sam`` | ``sam2``); ``decoder_meta`` the decoder's sidecar facts
    (SAM 2: the dynamic multimask settings)."""

    encoder: Engine
    decoder: Engine
    dense: Callable[[torch.Tensor], torch.Tensor]
    describe: dict[str, Any]
    decoder_image: Engine | None = None
    family: str = "sam"
    decoder_meta: dict[str, Any] | None = None


@dataclass(frozen=True)
class ProposerArtifacts:
    """A proposer family's artifacts: its encoder, and decoder sets in order of preference (the first
    set whose files all exist is used; the torch backend uses the first); the first name decodes."""

    encoder: str
    decoders: tuple[tuple[str, ...], ...]


SHARED_DECODER = ("sam_decoder_shared", "sam_decoder_image")
FAMILY_ARTIFACTS: dict[str, ProposerArtifacts] = {
    "sam": ProposerArtifacts("sam_encoder", (SHARED_DECODER, ("sam_decoder_batched",))),
    "sam2": ProposerArtifacts("sam2_encoder", (("sam2_decoder_batched",),)),
}
"""Proposer family (``models.sam.sam_family`` of ``sam.variant``) → the artifacts labeling runs."""


TORCH_SPEC_OPTIONS: dict[str, dict[str, bool]] = {
    "sam_decoder_shared": {"scale_first": False, "token_upscaling": False},
    "sam2_decoder_batched": {"share_image": False, "token_upscaling": False, "scale_first": False},
}
"""Spec options of the torch backend at fp32: upstream's attention order, upscaling modules and tiling
(the exported forms scale Q first for TensorRT's fusion, upscale with MatMuls on token rows for
onnxruntime's CPU kernels and share SAM 2's image side; not bit-equal to upstream)."""


def _family(cfg: Config) -> str:
    from zsplg_fast.models.sam import sam_family

    return sam_family(cfg.sam.variant)


def dense_from_engine(engine: Engine, device: torch.device) -> Callable[[torch.Tensor], torch.Tensor]:
    """Adapter: (1,3,S,S) float32 tensor → ``clip_dense`` engine → (1,D,h,w) float32 tensor on ``device``."""

    def run(x: torch.Tensor) -> torch.Tensor:
        feed = x if str(engine.device).startswith("cuda") else x.cpu().numpy()
        out = engine({"image": feed})["features"]
        return torch.as_tensor(out, device=device).float()

    return run


def torch_autocast(precision: str, device: torch.device) -> str:
    """The autocast the torch backend runs for ``label.precision`` on ``device``: fp16/bf16 on CUDA; bf16
    on a CPU with native bf16 (AVX512-BF16 or AMX); fp32 as is.

    Raises:
        ConfigError: any other precision, or bf16 on a CPU without native bf16 (emulated: slower than fp32).
    """
    if precision == "fp32":
        return "fp32"
    if device.type == "cuda" and precision in ("fp16", "bf16"):
        return precision
    if device.type == "cpu" and precision == "bf16":
        from zsplg_fast.utils.cpu import BF16_FLAGS, cpu_bf16_flags

        if cpu_bf16_flags():
            return "bf16"
        raise ConfigError(
            "label.precision",
            "bf16",
            f"this CPU has no native bf16 ({' or '.join(BF16_FLAGS)} missing in /proc/cpuinfo); "
            "use fp32 on this machine, or int8 with --backend ort",
            valid="fp32",
        )
    valid = "fp32, fp16, bf16" if device.type == "cuda" else "fp32, bf16 (CPUs with AVX512-BF16/AMX)"
    raise ConfigError("label.precision", precision, f"the torch backend on {device.type} runs", valid=valid)


def _torch(cfg: Config, sam: torch.nn.Module, dense: torch.nn.Module, device: torch.device) -> LabelEngines:
    from zsplg_fast.engines.torch_engine import TorchEngine
    from zsplg_fast.export.specs import get_spec

    autocast = torch_autocast(cfg.label.precision, device)
    family = _family(cfg)
    arts = FAMILY_ARTIFACTS[family]
    engines, meta = [], {}
    options = {k: dict(v) for k, v in TORCH_SPEC_OPTIONS.items()}
    # SAM 2 under autocast (not exact anyway): the decoder shares its image-side work (1.45x on CPU fp32)
    options["sam2_decoder_batched"]["share_image"] = family == "sam2" and autocast != "fp32"
    for name in (arts.encoder, *arts.decoders[0]):
        p = get_spec(name).bind(sam, **options.get(name, {}))
        meta[name] = p.metadata
        engines.append(
            TorchEngine(
                p.module,
                p.inputs,
                p.outputs,
                device=str(device),
                autocast=autocast,
                compile=cfg.label.compile == "on",
                name=name,
            )
        )

    def run_dense(x: torch.Tensor) -> torch.Tensor:
        with (
            torch.inference_mode(),
            torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast == "bf16"),
        ):
            return dense(x.to(device)).float()

    describe = {
        "backend": "torch",
        "autocast": autocast,
        "compile": cfg.label.compile == "on",
        "decoder": arts.decoders[0][0],
        "proposer": family,
    }
    return LabelEngines(
        engines[0],
        engines[1],
        run_dense,
        describe,
        decoder_image=engines[2] if len(engines) > 2 else None,
        family=family,
        decoder_meta=meta[arts.decoders[0][0]],
    )


def _check_source(path: Path, expected_weights: str, what: str) -> dict[str, Any]:
    from zsplg_fast.export.artifact import read_sidecar

    side = read_sidecar(path)
    got = side.get("source", {}).get("weights")
    if got != expected_weights:
        raise CheckpointError(
            path,
            f"exported from {what} weights {str(got)[:12]}, but the config's are {expected_weights[:12]}; "
            f"export again (zsplg-fast export {what}) or point --engines elsewhere",
        )
    return side


def _check_dense(side: dict[str, Any], cfg: Config, path: Path) -> None:
    opts = side.get("spec_options", {})
    want = {
        "image_size": cfg.clip.image_size,
        "gem_depth": cfg.clip.gem_depth,
        "gem_temperature": cfg.clip.gem_temperature,
        "gem_iters": cfg.clip.gem_iters,
    }
    diff = {k: (opts.get(k), v) for k, v in want.items() if k in opts and opts.get(k) != v}
    if diff:
        raise ConfigError(
            "clip", str(path), f"artifact's dense settings differ (artifact, config): {diff}; export again"
        )


Artifacts = tuple[Engine, Engine, Engine, "Engine | None", dict[str, Any]]
"""(encoder, decoder, clip_dense, decoder_image or None, the decoder's sidecar)."""

ARTIFACT_FOLDERS = {"ort": "export", "trt": "engines"}
"""Backend → the folder its artifacts are read from when ``label.engines`` is not set (cwd-relative)."""


def _artifacts(
    backend: str,
    folder: Path,
    suffix: Callable[[str], str],
    hint: str,
    options: dict[str, Any],
    loader: Callable[..., Engine] | None = None,
) -> Callable[[Config, dict[str, str]], Artifacts]:
    def load(cfg: Config, weights: dict[str, str]) -> Artifacts:
        root = Path(cfg.label.engines) if cfg.label.engines else folder
        arts = FAMILY_ARTIFACTS[_family(cfg)]
        # the first decoder set whose files all exist (SAM: the shared pair, else the one-piece decoder)
        decoders = next(
            (d for d in arts.decoders if all((root / suffix(n)).exists() for n in d)), arts.decoders[-1]
        )
        names = [(arts.encoder, "sam"), (decoders[0], "sam"), ("clip_dense", "clip")]
        names += [(n, "sam") for n in decoders[1:]]
        out, sides = [], {}
        for name, family in names:
            path = root / suffix(name)
            if not path.exists():
                raise ConfigError(
                    "label.engines",
                    str(root),
                    f"{path.name} not found; make it with: {hint}",
                    valid="a folder",
                )
            side = _check_source(path, weights[family], family)
            sides[name] = side
            if name == "clip_dense":
                _check_dense(side, cfg, path)
            out.append(loader(path, **options) if loader else load_engine(path, backend=backend, **options))
        return out[0], out[1], out[2], (out[3] if len(out) > 3 else None), sides[decoders[0]]

    return load


def _ort(cfg: Config, weights: dict[str, str], device: torch.device) -> Artifacts:
    suffix = (lambda n: f"{n}.int8.onnx") if cfg.label.precision == "int8" else (lambda n: f"{n}.onnx")
    if cfg.label.precision not in ("fp32", "int8"):
        raise ConfigError(
            "label.precision", cfg.label.precision, "onnxruntime artifacts are", valid="fp32, int8"
        )
    providers = ["cuda"] if device.type == "cuda" else ["cpu"]
    hint = "zsplg-fast export sam && zsplg-fast export clip" + (
        " --format onnx-int8" if suffix("x") != "x.onnx" else ""
    )
    options = {"providers": providers, **ort_memory_options(cfg)}
    return _artifacts("ort", Path(ARTIFACT_FOLDERS["ort"]), suffix, hint, options)(cfg, weights)


def ort_memory_options(cfg: Config) -> dict[str, Any]:
    """OrtEngine keyword arguments for onnxruntime's arenas from the config: the CUDA provider's
    ``gpu_mem_limit`` (bytes, per session; from ``label.ort_gpu_mem_limit_mb``, 0 = none) and
    ``arena_extend_strategy`` (kSameAsRequested: no power-of-two slack), and the CPU arena on/off
    (``label.ort_cpu_arena``)."""
    cuda: dict[str, Any] = {"arena_extend_strategy": "kSameAsRequested"}
    if cfg.label.ort_gpu_mem_limit_mb:
        cuda["gpu_mem_limit"] = int(cfg.label.ort_gpu_mem_limit_mb) << 20
    return {
        "provider_options": {"cuda": cuda},
        "session_options": {"enable_cpu_mem_arena": bool(cfg.label.ort_cpu_arena)},
    }


def _trt(cfg: Config, weights: dict[str, str], device: torch.device) -> Artifacts:
    from zsplg_fast.labeling.plan_fallback import load_plan  # rebuilds a plan made for another GPU

    prec = cfg.label.precision
    hint = f"zsplg-fast build export/<name>.onnx --precision {prec} --out engines/"
    suffix = lambda n: f"{n}.{prec}.plan"  # noqa: E731
    return _artifacts("trt", Path(ARTIFACT_FOLDERS["trt"]), suffix, hint, {}, load_plan)(cfg, weights)


ARTIFACT_BACKENDS: dict[str, Callable[[Config, dict[str, str], torch.device], Artifacts]] = {
    "ort": _ort,
    "trt": _trt,
}


def label_engines(
    cfg: Config,
    sam: torch.nn.Module | None,
    dense: torch.nn.Module | None,
    weights: dict[str, str],
    device: torch.device,
    models: Any = None,
) -> LabelEngines:
    """Engines for ``cfg.label.backend``: in-process torch modules, or exported artifacts.

    TensorRT plans built for another GPU / TensorRT are rebuilt here (:mod:`.plan_fallback`); when that
    is not possible the job labels on onnxruntime (the ONNX beside the plans) or torch (``models.sam`` /
    ``models.dense``, built on demand) with one warning line, and ``describe`` says so.
    """
    if cfg.label.backend == "torch":
        if sam is None and models is not None:
            sam, dense = models.sam, models.dense
        return _torch(cfg, sam, dense, device)  # type: ignore[arg-type]
    if cfg.label.backend not in ARTIFACT_BACKENDS:
        raise ConfigError("label.backend", cfg.label.backend, "unknown backend", valid="torch, ort, trt")
    try:
        enc, dec, clip, dec_image, dec_side = ARTIFACT_BACKENDS[cfg.label.backend](cfg, weights, device)
    except EngineIncompatibleError as e:
        from zsplg_fast.labeling.plan_fallback import fallback_backend

        root = Path(cfg.label.engines or ARTIFACT_FOLDERS["trt"])
        arts = FAMILY_ARTIFACTS[_family(cfg)]
        other = (
            fallback_backend(cfg.label.precision, root, arts.encoder, arts.decoders)
            if cfg.label.backend == "trt"
            else None
        )
        if other is None or (other[0] == "torch" and models is None):
            raise
        name, folder = other
        log.warning("%s; labeling on %s instead of TensorRT on this worker", e, name)
        label = replace(cfg.label, backend=name, engines=str(folder) if folder else None)
        got = label_engines(replace(cfg, label=label), None, None, weights, device, models)
        got.describe = {**got.describe, "fallback_from": "trt", "fallback_reason": str(e)}
        return got
    describe = {"backend": cfg.label.backend, "decoder": dec_side.get("spec"), "proposer": _family(cfg)}
    return LabelEngines(
        enc,
        dec,
        dense_from_engine(clip, device),
        describe,
        decoder_image=dec_image,
        family=_family(cfg),
        decoder_meta=dec_side,
    )
