"""The types of the sidecar fields readers use (engines, ``infer``, ``inspect``, ``build``, deploy folders);
checked by :func:`zsplg_runtime.sidecar.check_sidecar` on every read (torch-free: the runtime's).

A sidecar is JSON that users copy, edit and sometimes break; the readers index into it
(``side["outputs"][0]["shape"][1]``, ``o["max_abs"]:.2e``). :func:`check_fields` refuses a field of the
wrong shape once, when the sidecar is read, with a :class:`~zsplg_runtime.errors.SidecarError` naming the
file and the key, instead of a ``KeyError`` / ``TypeError`` wherever the field is first used. Unknown keys
are kept.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from zsplg_runtime.errors import SidecarError

DTYPES = ("float32", "float16", "bfloat16", "float64", "int64", "int32", "int8", "uint8", "bool")


def _int(v: Any, lo: int = 0) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= lo


def _real(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _str(v: Any) -> bool:
    return isinstance(v, str)


def _tensors(v: Any) -> bool:
    return isinstance(v, list) and all(
        isinstance(t, dict)
        and _str(t.get("name"))
        and t.get("dtype") in DTYPES
        and isinstance(t.get("shape"), list)
        and all(_int(d) or (_str(d) and d) for d in t["shape"])
        for t in v
    )


def _names(v: Any) -> bool:
    return v is None or (isinstance(v, list) and all(_str(n) for n in v) and len(v) <= 256)


def _palette(v: Any) -> bool:
    return v is None or (
        isinstance(v, list)
        and len(v) <= 256
        and all(isinstance(c, list) and len(c) == 3 and all(_int(x) and x <= 255 for x in c) for c in v)
    )


def _profiles(v: Any) -> bool:
    """ONNX: axis → [min, opt, max]; plan: input → [min shape, opt shape, max shape]."""

    def ok(x: Any) -> bool:
        return _int(x) or (isinstance(x, list) and all(_int(d) for d in x))

    return isinstance(v, dict) and all(
        isinstance(r, list) and len(r) == 3 and all(map(ok, r)) for r in v.values()
    )


def _validation(v: Any) -> bool:
    outs = v.get("outputs", []) if isinstance(v, dict) else None
    return isinstance(outs, list) and all(
        isinstance(o, dict)
        and _str(o.get("output", ""))
        and all(_real(o[k]) for k in ("max_abs", "max_rel", "cosine") if k in o)  # NaN: a zero output
        and isinstance(o.get("passed", True), bool)
        for o in outs
    )


def _deploy(v: Any) -> bool:
    miou = v.get("miou", {}) if isinstance(v, dict) else None
    return (
        isinstance(miou, dict)
        and (miou.get("mode") is None or _str(miou["mode"]))
        and (miou.get("window") is None or _int(miou["window"], 1))
    )


# key → (check, what it must be). A key that is absent is not checked (older sidecars lack some).
FIELDS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "name": (_str, "a string"),
    "spec": (lambda v: v is None or _str(v), "a string"),
    "kind": (_str, "a string"),
    "file": (_str, "a string"),
    "precision": (lambda v: v in ("fp32", "fp16", "bf16", "int8"), "fp32, fp16, bf16 or int8"),
    "sha256": (lambda v: v is None or _str(v), "a hex string"),
    "size_bytes": (_int, "an integer >= 0"),
    "opset": (_int, "an integer"),
    "inputs": (_tensors, "a list of {name, dtype, shape} with shape entries ints >= 0 or axis names"),
    "outputs": (_tensors, "a list of {name, dtype, shape} with shape entries ints >= 0 or axis names"),
    "class_names": (_names, "a list of at most 256 strings"),
    "palette": (_palette, "a list of at most 256 [r, g, b] in 0..255"),
    "profiles": (_profiles, "an object of axis name -> [min, opt, max] integers"),
    "preprocessing": (lambda v: isinstance(v, dict), "an object"),
    "versions": (lambda v: isinstance(v, dict), "an object"),
    "source": (lambda v: isinstance(v, dict), "an object"),
    "spec_options": (lambda v: isinstance(v, dict), "an object"),
    "validation": (_validation, "an object whose 'outputs' hold output names, numbers and 'passed'"),
    "deploy": (_deploy, "an object whose 'miou' holds a string 'mode' and an integer 'window'"),
    "onnxruntime_cpu_optimization": (_str, "a string"),
}


def check_fields(side: Mapping[str, Any], path: str | Path) -> None:
    """Raise :class:`SidecarError` naming ``path`` and the first field of :data:`FIELDS` whose value has
    the wrong type or range."""
    for key, (ok, what) in FIELDS.items():
        if key in side and not ok(side[key]):
            shown = repr(side[key])
            shown = shown if len(shown) <= 60 else shown[:57] + "..."
            raise SidecarError(path, f"sidecar field '{key}' = {shown} is not {what}; export it again")
