"""Model presets: choosing a model brings the settings it was made or tuned for.

Precedence (lowest first): defaults ← preset ← YAML ← ``--set`` ← CLI options. A preset only fills keys
the user did not set. Presets are chosen by the value of a selector key (``sam.variant``,
``clip.model``) after YAML and overrides are merged, so ``--clip toy`` brings the toy CLIP's settings.

The toy presets are read from ``zsplg_fast/toy/manifest.json`` (its ``recommended`` section) as data;
no toy code is imported (the config layer sits below the models).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from zsplg_fast.config.models import SAM2_VARIANTS
from zsplg_fast.errors import ConfigError

TOY_MANIFEST = Path(__file__).resolve().parents[1] / "toy" / "manifest.json"
PresetFn = Callable[[], dict[str, Any]]


def _toy_recommended(sections: tuple[str, ...], skip: tuple[str, ...] = ()) -> PresetFn:
    def preset() -> dict[str, Any]:
        try:
            rec = json.loads(TOY_MANIFEST.read_text())["recommended"]
        except (OSError, ValueError, KeyError) as e:
            raise ConfigError(
                "preset", str(TOY_MANIFEST), f"toy manifest has no readable 'recommended' section ({e})"
            ) from e
        return {
            f"{sec}.{k}": v
            for sec in sections
            for k, v in dict(rec.get(sec, {})).items()
            if f"{sec}.{k}" not in skip
        }

    return preset


# (selector key, value) → dotted settings. CLIP ViTs at GEM's 448 px with its default depth 7
# (= gem_depth 6 here), as in the GEM paper's open-vocabulary segmentation setup.
PRESETS: dict[tuple[str, str], PresetFn] = {
    ("sam.variant", "toy"): _toy_recommended(("amg",)),
    # classify.classes in the manifest is a description of the toy world's classes.txt, not a value
    ("clip.model", "toy"): _toy_recommended(("clip", "classify"), skip=("classify.classes",)),
    # SAM2AutomaticMaskGenerator's defaults differ from SAM's in pred_iou_thresh (0.8, not 0.88)
    **{("sam.variant", v): (lambda: {"amg.pred_iou_thresh": 0.8}) for v in SAM2_VARIANTS},
    ("clip.model", "ViT-B-16"): lambda: {"clip.image_size": 448, "clip.gem_depth": 6},
    ("clip.model", "ViT-L-14"): lambda: {"clip.image_size": 448, "clip.gem_depth": 6},
}
SELECTOR_DEFAULTS = {"sam.variant": "vit_b", "clip.model": "ViT-B-16"}


def register_preset(selector: str, value: str, settings: PresetFn) -> None:
    """Make ``selector = value`` (e.g. ``clip.model = my-vit``) bring ``settings()`` (dotted keys)."""
    PRESETS[(selector, value)] = settings


_MISSING = object()


def _get(data: Mapping[str, Any], dotted: str, missing: Any = None) -> Any:
    node: Any = data
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return missing
        node = node[part]
    return node


def preset_settings(data: Mapping[str, Any]) -> dict[str, tuple[Any, str]]:
    """Dotted key → (value, ``"preset <selector>=<value>"``) for the models chosen in ``data``."""
    out: dict[str, tuple[Any, str]] = {}
    for selector, default in SELECTOR_DEFAULTS.items():
        chosen = _get(data, selector) or default
        fn = PRESETS.get((selector, str(chosen)))
        if fn is not None:
            for k, v in fn().items():
                out[k] = (v, f"preset {selector}={chosen}")
    return out


def with_presets(data: Mapping[str, Any]) -> dict[str, Any]:
    """``data`` (nested, YAML ← overrides) with preset values filled in where the user set nothing."""
    from zsplg_fast.config.loader import merge_dotted

    fills = {k: v for k, (v, _) in preset_settings(data).items() if _get(data, k, _MISSING) is _MISSING}
    return merge_dotted(dict(data), fills)


def _flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in data.items():
        key = f"{prefix}.{k}" if prefix else str(k)
        if isinstance(v, Mapping) and v:
            out.update(_flatten(v, key))
        else:
            out[key] = v
    return out


def value_sources(
    yaml_data: Mapping[str, Any],
    yaml_name: str,
    layers: Mapping[str, Mapping[str, Any]],
) -> dict[str, str]:
    """Dotted key → where its value came from: ``preset …``, ``config <file>``, or a layer name
    (``--set``, ``option``), later layers winning; keys not listed keep their default."""
    out: dict[str, str] = {}
    merged: dict[str, Any] = dict(yaml_data)
    for key in _flatten(yaml_data):
        out[key] = f"config {yaml_name}"
    from zsplg_fast.config.loader import merge_dotted

    for name, layer in layers.items():
        given = {k: v for k, v in layer.items() if v is not None}
        merged = merge_dotted(merged, given)
        for key in given:
            out[key] = name
    for key, (_, source) in preset_settings(merged).items():
        out.setdefault(key, source)
    return out
