"""Typed config loading: YAML → dataclasses, dotted overrides, strict validation, fingerprints.

Every refusal is a :class:`~zsplg_fast.errors.ConfigError` naming the dotted key, the bad value,
the valid values or range, and (for unknown keys) the closest valid key.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import math
import types
import typing
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import yaml

from zsplg_fast.config.fields import describe_range
from zsplg_fast.errors import ConfigError

T = TypeVar("T")

_NONE = type(None)


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin in (list, tuple):
        args = typing.get_args(tp)
        return f"list of {_type_name(args[0])}" if args else "list"
    if tp is _NONE:
        return "null"
    return getattr(tp, "__name__", str(tp))


def _coerce(tp: Any, value: Any, key: str) -> Any:
    """Check ``value`` against type ``tp``; allow int→float and list→tuple. Raise ConfigError."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and _NONE in args:
            return None
        for a in args:
            if a is _NONE:
                continue
            try:
                return _coerce(a, value, key)
            except ConfigError:
                continue
        raise ConfigError(key, value, f"wrong type {type(value).__name__}", valid=_type_name(tp))
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(key, value, f"wrong type {type(value).__name__}", valid=_type_name(tp))
        (inner,) = typing.get_args(tp)[:1] or (Any,)
        items = [_coerce(inner, v, f"{key}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if tp is Any:
        return value
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, Mapping):
            raise ConfigError(key, value, "expected a mapping", valid=f"keys of {tp.__name__}")
        return from_dict(tp, value, prefix=key)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(key, value, f"wrong type {type(value).__name__}", valid="true or false")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if not math.isfinite(value):  # .nan passes every range test; .inf is never a setting
                raise ConfigError(key, value, "not a finite number", valid="a finite number")
            return float(value)
        raise ConfigError(key, value, f"wrong type {type(value).__name__}", valid="a number")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(key, value, f"wrong type {type(value).__name__}", valid="an integer")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(key, value, f"wrong type {type(value).__name__}", valid="a string")
    if isinstance(value, tp):
        return value
    raise ConfigError(key, value, f"wrong type {type(value).__name__}", valid=_type_name(tp))


def _check_meta(meta: Mapping[str, Any], value: Any, key: str) -> None:
    if value is None:
        return
    choices = meta.get("choices")
    if choices is not None and value not in choices:
        close = difflib.get_close_matches(str(value), [str(c) for c in choices], n=1)
        raise ConfigError(
            key,
            value,
            "not an allowed value",
            valid=", ".join(map(str, choices)),
            suggestion=close[0] if close else None,
        )
    rng = describe_range(meta)
    if rng is None or not isinstance(value, (int, float)):
        return
    ge, le, gt, lt = meta.get("ge"), meta.get("le"), meta.get("gt"), meta.get("lt")
    bad = (
        (ge is not None and value < ge)
        or (le is not None and value > le)
        or (gt is not None and value <= gt)
        or (lt is not None and value >= lt)
    )
    if bad:
        raise ConfigError(key, value, "out of range", valid=rng)


def from_dict(cls: type[T], data: Mapping[str, Any], prefix: str = "") -> T:
    """Build dataclass ``cls`` from a mapping, refusing unknown keys, wrong types and bad values."""
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    kwargs: dict[str, Any] = {}
    for k, v in data.items():
        key = f"{prefix}.{k}" if prefix else str(k)
        if k not in fields:
            close = difflib.get_close_matches(str(k), list(fields), n=1, cutoff=0.5)
            raise ConfigError(
                key,
                v,
                "unknown key",
                valid=", ".join(sorted(fields)),
                suggestion=(f"{prefix}.{close[0]}" if prefix else close[0]) if close else None,
            )
        value = _coerce(hints[k], v, key)
        _check_meta(fields[k].metadata, value, key)
        kwargs[k] = value
    obj = cls(**kwargs)
    post = getattr(obj, "validate", None)
    if callable(post):
        post(prefix)
    return obj


def to_dict(obj: Any) -> Any:
    """Dataclass → plain dict (tuples become lists), for YAML/JSON."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, Mapping):
        return {str(k): to_dict(v) for k, v in obj.items()}
    if isinstance(obj, Path):
        return str(obj)
    return obj


def parse_overrides(items: Iterable[str]) -> dict[str, Any]:
    """Parse ``a.b=value`` strings; values are read as YAML scalars (``1``, ``0.5``, ``null``, ``[1,2]``).

    Raises:
        ConfigError: no ``=``, or a value that is not valid YAML (names the key and the value)."""
    out: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(item, None, "override must look like key.sub=value")
        k, v = item.split("=", 1)
        out[k.strip()] = _safe_yaml(v, f"--set {k.strip()}", v) if v.strip() else ""
    return out


# A YAML document's size after its aliases are expanded (``&a [*b, *b, ...]`` doubles per level): the
# config's JSON round trip (merge_dotted) would expand a "billion laughs" document in memory.
MAX_YAML_NODES = 100_000
# libyaml's safe loader when PyYAML has it: the pure-Python scanner is quadratic in flow nesting (3000
# nested '[' take seconds before the depth check can see them); libyaml refuses past 1000 at once.
_LOADER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
MAX_YAML_DEPTH = 64


def _check_size(data: Any, key: str, value: Any) -> None:
    """ConfigError when ``data`` nests deeper than MAX_YAML_DEPTH or holds more than MAX_YAML_NODES
    values once aliases are expanded (counted without expanding them)."""
    count = 0
    stack: list[tuple[Any, int]] = [(data, 0)]
    while stack:
        node, depth = stack.pop()
        count += 1
        if depth > MAX_YAML_DEPTH:
            raise ConfigError(key, value, f"nests deeper than {MAX_YAML_DEPTH} levels")
        if count > MAX_YAML_NODES:
            raise ConfigError(key, value, f"holds more than {MAX_YAML_NODES} values (YAML aliases expanded)")
        if isinstance(node, Mapping):
            stack.extend((v, depth + 1) for v in node.values())
        elif isinstance(node, (list, tuple)):
            stack.extend((v, depth + 1) for v in node)


def _safe_yaml(text: str, key: str, value: Any) -> Any:
    """``yaml.safe_load`` with every failure a ConfigError on ``key``: syntax, unknown tags, nesting."""
    try:
        depth = 0  # the parser is a state machine, the composer recurses: measure the depth first
        for event in yaml.parse(text, Loader=_LOADER):
            if isinstance(event, yaml.CollectionStartEvent):
                depth += 1
                if depth > MAX_YAML_DEPTH:
                    raise ConfigError(key, value, f"nests deeper than {MAX_YAML_DEPTH} levels")
            elif isinstance(event, yaml.CollectionEndEvent):
                depth -= 1
        data = yaml.load(text, Loader=_LOADER)  # a safe loader (CSafeLoader or SafeLoader)
    except yaml.YAMLError as e:
        raise ConfigError(key, value, f"not valid YAML: {' '.join(str(e).split())}") from e
    except RecursionError as e:
        raise ConfigError(key, value, f"nests deeper than {MAX_YAML_DEPTH} levels") from e
    _check_size(data, key, value)
    return data


def merge_dotted(base: dict[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """Apply ``{"a.b": v}`` overrides onto a nested dict (copy). Unknown keys are caught by from_dict."""
    out = json.loads(json.dumps(base, default=str))
    for dotted, v in overrides.items():
        if v is None and dotted.startswith("!"):
            continue
        parts = dotted.split(".")
        node = out
        for p in parts[:-1]:
            child = node.get(p)
            if not isinstance(child, dict):
                child = {}
                node[p] = child
            node = child
        node[parts[-1]] = v
    return out


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping; a missing file or a non-mapping document is a ConfigError naming the file."""
    p = Path(path)
    if not p.is_file():
        siblings = sorted(q.name for q in p.parent.glob("*.y*ml")) if p.parent.is_dir() else []
        close = difflib.get_close_matches(p.name, siblings, n=1, cutoff=0.6)
        suggestion = str(p.with_name(close[0])) if close else None
        raise ConfigError(str(p), None, "config file not found", suggestion=suggestion)
    try:
        text = p.read_bytes().decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(str(p), None, f"not UTF-8 text (byte {e.start}); save the config as UTF-8") from e
    data = _safe_yaml(text, str(p), None) or {}
    if not isinstance(data, dict):
        raise ConfigError(str(p), type(data).__name__, "top level must be a mapping")
    return data


def load(cls: type[T], path: str | Path | None = None, overrides: Mapping[str, Any] | None = None) -> T:
    """Defaults ← YAML file ← dotted overrides (CLI options), validated into ``cls``."""
    data = load_yaml(path) if path is not None else {}
    if overrides:
        data = merge_dotted(data, {k: v for k, v in overrides.items() if v is not None})
    return from_dict(cls, data)


def fingerprint(obj: Any, length: int = 16) -> str:
    """Stable short sha256 of a dataclass / dict / list (canonical JSON)."""
    blob = json.dumps(to_dict(obj), sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:length]
