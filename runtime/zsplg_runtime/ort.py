"""OrtSession: an ONNX artifact in onnxruntime (CPU, CUDA or TensorRT execution provider), numpy in and out.

onnxruntime-gpu does not raise when a GPU provider cannot start: it logs and quietly runs on the CPU
(shared measurements). So after creating the session we compare ``get_providers()`` with what was
asked and raise :class:`ProviderFallbackError` on a silent fallback. A provider the installed
onnxruntime does not list at all is a :class:`MissingDependencyError` with the install command.

The TensorRT provider is the exception: it loads only beside the TensorRT major version its
onnxruntime-gpu wheel was built against (TensorRT 10 up to onnxruntime 1.26; NVIDIA: onnxruntime 1.27+
supports TensorRT 11), so when it is asked for but not active and the CUDA provider is, the session runs
on CUDA with a warning that says so (``self.fallback``).
Its settings come from the artifact: engine and timing caches under the engines folder, and
min/opt/max profile shapes from the sidecar, so it does not rebuild on every new shape.

torch tensors, IOBinding and CUDA streams are the business of ``zsplg_fast.engines.ort.OrtEngine``,
a subclass that fills :meth:`OrtSession._compute_stream`.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from zsplg_runtime.errors import (
    CheckpointError,
    ConfigError,
    MissingDependencyError,
    ModelFileError,
    ProviderFallbackError,
    SidecarError,
)
from zsplg_runtime.feeds import check_feeds
from zsplg_runtime.sidecar import open_artifact, sidecar_path
from zsplg_runtime.tensors import TensorSpec, spec_profiles

# short name → (onnxruntime provider, default options); follows the onnxruntime EP docs' option names
PROVIDERS: dict[str, tuple[str, dict[str, Any]]] = {
    "cpu": ("CPUExecutionProvider", {}),
    "cuda": ("CUDAExecutionProvider", {"device_id": 0, "cudnn_conv_algo_search": "HEURISTIC"}),
    "tensorrt": (
        "TensorrtExecutionProvider",
        {
            "device_id": 0,
            "trt_fp16_enable": False,  # the precision is the ONNX graph's
            "trt_engine_cache_enable": True,
            "trt_timing_cache_enable": True,
        },
    ),
}
TRT_EP_FALLBACK = (
    "the onnxruntime TensorRT provider is not active: it loads only beside the TensorRT major its "
    "onnxruntime-gpu was built against (TensorRT 10 up to onnxruntime 1.26, TensorRT 11 from 1.27) and "
    "not without TensorRT; running on {got} instead. For TensorRT, match the versions or build a plan: "
    "zsplg-fast build {path} (backend trt)"
)
GPU_INSTALL = (
    "pip uninstall -y onnxruntime && pip install onnxruntime-gpu (never both in one environment; "
    "needs CUDA 12/13 + cuDNN 9, and the TensorRT its wheel was built against for the TensorRT provider)"
)
EXPORT_AGAIN = "export it again (zsplg-fast export / deploy) or copy the whole folder again"
_ORT_TYPES = {
    "tensor(float)": "float32",
    "tensor(float16)": "float16",
    "tensor(double)": "float64",
    "tensor(int64)": "int64",
    "tensor(int32)": "int32",
    "tensor(uint8)": "uint8",
    "tensor(int8)": "int8",
    "tensor(bool)": "bool",
}
OPT_LEVELS = ("disable", "basic", "extended", "all")
# onnxruntime's pybind error classes raised when the file itself is bad (not a provider problem)
_ORT_FILE_ERRORS = ("InvalidProtobuf", "InvalidGraph", "NoModel", "NoSuchFile", "ModelLoaded")


def import_ort() -> Any:
    """``import onnxruntime``, or MissingDependencyError with the install command."""
    try:
        import onnxruntime as ort
    except ImportError as e:
        raise MissingDependencyError("onnxruntime", "ONNX engines", "pip install onnxruntime") from e
    return ort


def ort_missing_reason() -> str | None:
    """None when onnxruntime imports, else the message a user would get."""
    try:
        import_ort()
    except MissingDependencyError as e:
        return str(e)
    return None


def invalid_onnx(path: str | Path, err: BaseException) -> ModelFileError:
    """The error for an ONNX file that onnx / onnxruntime cannot parse."""
    text = str(err).splitlines()[0] if str(err) else ""
    text = text.split("failed:")[-1].strip()[:160]
    return ModelFileError(path, f"not a valid ONNX model ({type(err).__name__}: {text})", EXPORT_AGAIN)


def _is_file_error(err: BaseException) -> bool:
    return type(err).__name__ in _ORT_FILE_ERRORS or "Load model from" in str(err)


def ort_session(ort: Any, path: str | Path, options: Any, providers: list[Any]) -> Any:
    """``ort.InferenceSession(path, options, providers=providers)``; a corrupt / truncated file (or
    missing external data) raises :class:`ModelFileError`; other errors pass through unchanged."""
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(p, f"ONNX model not found; {EXPORT_AGAIN}")
    try:
        return ort.InferenceSession(str(p), options, providers=providers)
    except Exception as e:
        if _is_file_error(e) or _fails_checker(p):
            raise invalid_onnx(p, e) from e
        raise


def _fails_checker(path: Path) -> bool:
    """True when ``onnx.checker`` refuses the file: a damaged model that still parses (a flipped byte in
    a tensor or a name) makes onnxruntime raise Fail / InvalidArgument / TypeError, which are also what
    a provider problem raises; the checker tells them apart. Only called after a failure. The runtime does
    not depend on onnx: where it is not installed (an edge device) the check is skipped (False) and the
    error passes through unchanged."""
    try:
        import onnx  # optional here: zsplg-fast installs it, zsplg-runtime does not
    except ImportError:
        return False
    try:
        onnx.checker.check_model(str(path))
    except Exception:  # ValidationError, DecodeError, UnicodeDecodeError: all mean a bad file
        return True
    return False


def resolve_provider(name: str) -> tuple[str, str]:
    """Short or full provider name → (short, onnxruntime name)."""
    for short, (full, _) in PROVIDERS.items():
        if name in (short, full):
            return short, full
    raise ConfigError("providers", name, "unknown execution provider", valid=", ".join(PROVIDERS))


def trt_provider_options(side: Mapping[str, Any], cache_dir: str | Path, name: str) -> dict[str, Any]:
    """TensorRT-provider options of an artifact: caches under ``cache_dir/ort_trt/<name>`` and the
    sidecar's min/opt/max profile shapes (``"input:1x3x256x256,..."``), when it declares them."""
    cache = Path(cache_dir) / "ort_trt" / name
    opts: dict[str, Any] = {"trt_engine_cache_path": str(cache), "trt_timing_cache_path": str(cache)}
    shapes = spec_profiles(side)
    if shapes:
        for i, key in enumerate(
            ("trt_profile_min_shapes", "trt_profile_opt_shapes", "trt_profile_max_shapes")
        ):
            opts[key] = ",".join(f"{n}:{'x'.join(str(d) for d in s[i])}" for n, s in shapes.items())
    return opts


def specs_from_session(items: Sequence[Any]) -> list[TensorSpec]:
    """TensorSpecs of onnxruntime's NodeArgs (a bare ONNX without a sidecar)."""
    out = []
    for i, it in enumerate(items):
        shape = tuple(d if isinstance(d, int) else (d or f"dim{i}_{j}") for j, d in enumerate(it.shape))
        out.append(TensorSpec(it.name, _ORT_TYPES.get(it.type, it.type), shape))
    return out


def _same_io(declared: Sequence[TensorSpec], real: Sequence[TensorSpec]) -> bool:
    """The same names (in any order), each of the same rank, with equal sizes where both give a number."""
    by_name = {r.name: r.shape for r in real}
    return len(declared) == len(by_name) and all(
        d.name in by_name
        and len(d.shape) == len(by_name[d.name])
        and all(
            not (isinstance(a, int) and isinstance(b, int)) or a == b
            for a, b in zip(d.shape, by_name[d.name], strict=True)
        )
        for d in declared
    )


class OrtSession:
    """An onnxruntime session behind the Engine API: ``session(feeds) -> {name: np.ndarray}``.

    Args:
        path: ``<name>.onnx`` (its sidecar, when present, gives the declared inputs/outputs).
        providers: short names (``"cpu"``, ``"cuda"``, ``"tensorrt"``) or onnxruntime names, in
            preference order; CPU is always the last resort of onnxruntime itself.
        provider_options: short name → options merged over :data:`PROVIDERS` defaults.
        intra_op_threads / inter_op_threads: onnxruntime thread pools (None = its default).
        optimization: graph optimisation level, one of disable / basic / extended / all.
        device_id: CUDA device for the GPU providers.
        session_options: other ``onnxruntime.SessionOptions`` attributes, e.g.
            ``{"enable_cpu_mem_arena": False}``.
        cache_dir: the engines folder; the TensorRT provider caches its engines in ``ort_trt/<name>``.
    Raises:
        MissingDependencyError: onnxruntime, or a provider the installed onnxruntime does not offer.
        ProviderFallbackError: the session silently fell back from an asked provider (the TensorRT
            provider falls back to CUDA with a warning instead).
        ModelFileError / CheckpointError: a corrupt or missing model file.
    """

    backend = "ort"

    def __init__(
        self,
        path: str | Path,
        providers: Sequence[str] = ("cpu",),
        provider_options: Mapping[str, Mapping[str, Any]] | None = None,
        intra_op_threads: int | None = None,
        inter_op_threads: int | None = None,
        optimization: str = "all",
        device_id: int = 0,
        session_options: Mapping[str, Any] | None = None,
        cache_dir: str | Path = "engines",
    ) -> None:
        ort = import_ort()
        self.path = Path(path)
        if optimization not in OPT_LEVELS:
            raise ConfigError("optimization", optimization, "unknown level", valid=", ".join(OPT_LEVELS))
        asked = [resolve_provider(p) for p in providers] or [("cpu", "CPUExecutionProvider")]
        if any(a[0] == "tensorrt" for a in asked) and not any(a[0] == "cuda" for a in asked):
            i = next(i for i, a in enumerate(asked) if a[0] == "tensorrt")
            asked.insert(i + 1, ("cuda", PROVIDERS["cuda"][0]))  # nodes TensorRT cannot take, and fallback
        available = ort.get_available_providers()
        for short, full in asked:
            if full not in available:
                raise MissingDependencyError(
                    "onnxruntime-gpu", f"the onnxruntime {short} provider ({full})", GPU_INSTALL
                )
        opts = ort.SessionOptions()
        if intra_op_threads:
            opts.intra_op_num_threads = int(intra_op_threads)
        if inter_op_threads:
            opts.inter_op_num_threads = int(inter_op_threads)
        for key, value in (session_options or {}).items():
            if not hasattr(opts, key):
                raise ConfigError("session_options", key, "not an onnxruntime.SessionOptions attribute")
            setattr(opts, key, value)
        side = open_artifact(self.path, required=False)
        self.sidecar = side
        cap = side.get("onnxruntime_cpu_optimization")  # fp16 ViTs crash ORT CPU at "all" (precision)
        if (
            cap in OPT_LEVELS
            and asked[0][0] == "cpu"
            and OPT_LEVELS.index(optimization) > OPT_LEVELS.index(cap)
        ):
            optimization = cap
        self.optimization = optimization
        levels = ort.GraphOptimizationLevel
        opts.graph_optimization_level = {
            "disable": levels.ORT_DISABLE_ALL,
            "basic": levels.ORT_ENABLE_BASIC,
            "extended": levels.ORT_ENABLE_EXTENDED,
            "all": levels.ORT_ENABLE_ALL,
        }[optimization]
        user = provider_options or {}
        gpu = asked[0][0] != "cpu"
        stream = self._compute_stream(device_id) if gpu else None
        plist = []
        for short, full in asked:
            o = {**PROVIDERS[short][1], **dict(user.get(short, {}))}
            if "device_id" in o:
                o["device_id"] = device_id
            if short == "tensorrt":
                o = {**trt_provider_options(side, cache_dir, self.path.stem), **o}
                Path(o["trt_engine_cache_path"]).mkdir(parents=True, exist_ok=True)
            if short in ("cuda", "tensorrt") and stream is not None:
                o.setdefault("user_compute_stream", stream)
            plist.append((full, o))
        self.provider_options = dict(plist)
        self.session = ort_session(ort, self.path, opts, plist)  # corrupt file → ModelFileError
        got = list(self.session.get_providers())
        self.fallback: str | None = None
        for short, full in asked:
            if full in got:
                continue
            if short == "tensorrt" and PROVIDERS["cuda"][0] in got:
                self.fallback = TRT_EP_FALLBACK.format(got=", ".join(got), path=self.path)
                warnings.warn(self.fallback, RuntimeWarning, stacklevel=2)
                continue
            raise ProviderFallbackError(
                self.path,
                full,
                got,
                "check the CUDA driver, CUDA/cuDNN libraries (and libnvinfer for TensorRT)",
            )
        self.providers = got
        # shapes the TensorRT provider was built for (callers cap their batches there); others: any
        self.profiles = spec_profiles(side) if PROVIDERS["tensorrt"][0] in got else {}
        self.device_id = device_id
        self.device = f"cuda:{device_id}" if gpu else "cpu"
        self.inputs, self.outputs = self._io(side)

    def _compute_stream(self, device_id: int) -> str | None:
        """The CUDA stream (its address as a string) the GPU providers run on; None = their own.
        ``zsplg_fast.engines.ort.OrtEngine`` gives a torch stream here."""
        return None

    def _io(self, side: Mapping[str, Any]) -> tuple[list[TensorSpec], list[TensorSpec]]:
        """The sidecar's inputs/outputs (symbolic axis names), checked against the graph's; the graph's
        when the sidecar has none.

        Raises:
            ModelFileError: a damaged file whose tensor names are not UTF-8.
            SidecarError: the sidecar's inputs or outputs are not the graph's (names in any order,
                ranks, and the sizes both give as numbers).
        """
        try:
            real = (
                specs_from_session(self.session.get_inputs()),
                specs_from_session(self.session.get_outputs()),
            )
        except UnicodeDecodeError as e:  # a damaged file whose tensor names are not UTF-8
            raise invalid_onnx(self.path, e) from e
        if not (side.get("inputs") and side.get("outputs")):
            return real
        declared = (
            [TensorSpec.from_dict(d) for d in side["inputs"]],
            [TensorSpec.from_dict(d) for d in side["outputs"]],
        )
        for kind, got, want in zip(("inputs", "outputs"), declared, real, strict=True):
            if not _same_io(got, want):
                shown = ", ".join(f"{t.name} {list(t.shape)}" for t in want)
                raise SidecarError(
                    sidecar_path(self.path),
                    f"sidecar {kind} do not match the model's ({shown}); export it again",
                )
        return declared

    def run_numpy(self, feeds: Mapping[str, Any]) -> dict[str, np.ndarray]:
        """Run checked ``feeds`` (numpy arrays, or anything ``np.asarray`` takes) → numpy outputs."""
        arrays = {k: np.asarray(v) for k, v in feeds.items()}
        names = [o.name for o in self.outputs]
        return dict(zip(names, self.session.run(names, arrays), strict=True))

    def __call__(self, feeds: Mapping[str, Any]) -> dict[str, Any]:
        """``feeds``: input name → array of the declared dtype and shape → output name → np.ndarray.

        Raises:
            FeedError: a missing or unknown input, a wrong dtype, rank or size.
        """
        return self.run_numpy(check_feeds(self.inputs, feeds))
