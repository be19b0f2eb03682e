"""Validation of configuration data into typed, frozen dataclasses: :func:`build` and its errors.

:class:`ConfigError` messages start with the key path (``train.optim.lr: expected a number, got
'fast'``). Numbers written as ``2e-4`` are numbers; ``pkg://module/sub`` paths name folders inside
installed packages; field metadata (``help``, ``min``/``max``, ``exists``, ``min_len``, ``inside``) and a
dataclass's ``check()`` are applied as :mod:`pipelines.config` describes. Reading YAML files, overrides
and the JSON Schema are in :mod:`pipelines.config`, which re-exports these names.
"""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from pathlib import Path
from typing import Any, Literal, Union

from robustsam_prior.core.registry import did_you_mean

_FLOAT_RE = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$")
# YAML 1.1's spellings of the special floats, as strings reach us when quoted (then refused as not finite)
_SPECIAL_FLOATS = {".inf": float("inf"), "+.inf": float("inf"), "-.inf": float("-inf"), ".nan": float("nan")}


class ConfigError(ValueError):
    """A configuration problem; the message starts with the key path (and the file, if known)."""


def fail(path: str, message: str) -> typing.NoReturn:
    raise ConfigError(f"{path}: {message}" if path else message)


def _join(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else str(key)


# ---------------------------------------------------------------------------------------------
# scalar coercion
# ---------------------------------------------------------------------------------------------


def parse_number(value: Any, path: str, *, integer: bool = False) -> int | float:
    """``value`` as a number; accepts YAML-1.1 leftovers like the string ``'2e-4'``. Bools are refused, and
    so are NaN and infinities (no setting of this project means them) and integers beyond 64 bits."""
    kind = "an integer" if integer else "a number"
    if isinstance(value, bool):
        fail(path, f"expected {kind}, got {value!r}")
    if isinstance(value, str):
        text = value.strip().replace("_", "")
        if text.lower() in _SPECIAL_FLOATS:
            value = _SPECIAL_FLOATS[text.lower()]
        elif not _FLOAT_RE.match(text):
            fail(path, f"expected {kind}, got {value!r}")
        else:
            value = int(text) if re.fullmatch(r"[+-]?\d+", text) else float(text)
    if not isinstance(value, (int, float)):
        fail(path, f"expected {kind}, got {type(value).__name__} {value!r}")
    if isinstance(value, float) and not math.isfinite(value):
        fail(path, f"expected a finite number, got {value}")
    if integer:
        if isinstance(value, float):
            if not value.is_integer():
                fail(path, f"expected an integer, got {value!r}")
            value = int(value)
        if not -(2**63) <= value < 2**63:
            fail(path, f"expected an integer that fits in 64 bits, got one of {len(str(abs(value)))} digits")
        return value
    return float(value)


def resolve_path(value: str, path: str) -> Path:
    """A path from the config: ``~`` expanded, ``pkg://module/rest`` resolved to a package folder."""
    from robustsam_prior.core.fileio import package_path

    try:
        return package_path(value)
    except FileNotFoundError as e:
        fail(path, str(e))


# ---------------------------------------------------------------------------------------------
# dataclass construction
# ---------------------------------------------------------------------------------------------


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if tp is type(None):
        return "null"
    if dataclasses.is_dataclass(tp):
        return "a mapping"
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (list, tuple):
        return "a list"
    if origin is dict:
        return "a mapping"
    return getattr(tp, "__name__", str(tp))


def is_union(tp: Any) -> bool:
    return typing.get_origin(tp) in (Union, types.UnionType)


def build(cls: type, data: Any, path: str = "") -> Any:
    """Construct dataclass ``cls`` from ``data`` (a mapping), validating recursively."""
    return _convert(cls, data, path, {})


# what YAML 1.2 reads as a number but PyYAML (YAML 1.1) leaves a string: an exponent without a dot
_EXPONENT_RE = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)[eE][+-]?\d+")


def _convert(tp: Any, value: Any, path: str, meta: dict) -> Any:
    if tp is Any:  # free-form values (arch_kwargs, prior options): '1e-5' is the number YAML 1.2 reads
        if isinstance(value, str) and _EXPONENT_RE.fullmatch(value.strip()):
            return parse_number(value, path)
        if isinstance(value, dict):
            return {k: _convert(Any, v, _join(path, str(k)), {}) for k, v in value.items()}
        if isinstance(value, list):
            return [_convert(Any, v, _join(path, i), {}) for i, v in enumerate(value)]
        return value
    if is_union(tp):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        non_null = [a for a in args if a is not type(None)]
        disc = [a for a in non_null if dataclasses.is_dataclass(a)]
        if len(disc) > 1:
            return _convert_tagged(disc, value, path)
        errors = []
        for a in non_null:
            try:
                return _convert(a, value, path, meta)
            except ConfigError as e:
                errors.append(str(e))
        if len(non_null) == 1:
            raise ConfigError(errors[0])
        fail(path, f"expected {' or '.join(_type_name(a) for a in args)}, got {value!r}")
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        return _convert_dataclass(tp, value, path)
    if origin is Literal:
        choices = typing.get_args(tp)
        if value not in choices:
            hint = did_you_mean(str(value), [str(c) for c in choices])
            fail(path, f"expected one of {', '.join(repr(c) for c in choices)}, got {value!r}{hint}")
        return value
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            fail(path, f"expected a list, got {type(value).__name__} {value!r}")
        args = typing.get_args(tp)
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                fail(path, f"expected a list of {len(args)} items, got {len(value)}")
            out = [_convert(a, v, _join(path, i), meta) for i, (a, v) in enumerate(zip(args, value))]
        else:
            item = args[0] if args else Any
            out = [_convert(item, v, _join(path, i), meta) for i, v in enumerate(value)]
        if "min_len" in meta and len(out) < meta["min_len"]:
            fail(path, f"needs at least {meta['min_len']} item(s), got {len(out)}")
        return tuple(out)
    if origin is dict:
        if not isinstance(value, dict):
            fail(path, f"expected a mapping, got {type(value).__name__} {value!r}")
        _, vt = typing.get_args(tp) or (str, Any)
        return {str(k): _convert(vt, v, _join(path, str(k)), {}) for k, v in value.items()}
    if tp is bool:
        if not isinstance(value, bool):
            fail(path, f"expected true or false, got {value!r}")
        return value
    if tp in (int, float):
        number = parse_number(value, path, integer=tp is int)
        if "min" in meta and number < meta["min"]:
            fail(path, f"must be >= {meta['min']}, got {number}")
        if "max" in meta and number > meta["max"]:
            fail(path, f"must be <= {meta['max']}, got {number}")
        return number
    if tp is str:
        if not isinstance(value, str):
            fail(path, f"expected a string, got {type(value).__name__} {value!r}")
        if meta.get("exists"):
            _check_exists(resolve_path(value, path), value, path, meta["exists"])
        if meta.get("inside"):
            from robustsam_prior.core.fileio import relative_path_problem

            problem = relative_path_problem(value)
            if problem:
                fail(path, f"must be a path inside {meta['inside']}, got {value!r} ({problem})")
        return value
    raise TypeError(f"config schema: unsupported type {tp!r} at {path}")  # a bug in a schema


def _check_exists(p: Path, raw: str, path: str, kind: str) -> None:
    if kind == "file" and not p.is_file():
        fail(path, f"file not found: {raw!r}" + (" (it is a folder)" if p.is_dir() else ""))
    if kind == "dir" and not p.is_dir():
        fail(path, f"folder not found: {raw!r}" + (" (it is a file)" if p.is_file() else ""))
    if kind == "any" and not p.exists():
        fail(path, f"not found: {raw!r}")


def _convert_tagged(classes: list[type], value: Any, path: str) -> Any:
    """Union of dataclasses told apart by their ``TAG_FIELD`` (e.g. ``step: restore``)."""
    tag_field = getattr(classes[0], "TAG_FIELD", "type")
    table = {c.TAG: c for c in classes}
    if not isinstance(value, dict):
        fail(path, f"expected a mapping with a {tag_field!r} key, got {value!r}")
    tag = value.get(tag_field)
    if tag is None:
        fail(path, f"missing key {tag_field!r} (one of {', '.join(sorted(table))})")
    if tag not in table:
        fail(
            _join(path, tag_field),
            f"unknown {tag_field} {tag!r}{did_you_mean(str(tag), list(table))}; known: {', '.join(sorted(table))}",
        )
    return _convert_dataclass(table[tag], value, path)


def _convert_dataclass(cls: type, value: Any, path: str) -> Any:
    if value is None:
        value = {}
    if not isinstance(value, dict):
        fail(path, f"expected a mapping, got {type(value).__name__} {value!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    tag_field = getattr(cls, "TAG_FIELD", None) if hasattr(cls, "TAG") else None
    for key in value:
        if key not in fields and key != tag_field:
            fail(_join(path, str(key)), f"unknown key{did_you_mean(str(key), list(fields))}; known: {', '.join(fields)}")
    kwargs = {}
    for name, f in fields.items():
        sub = _join(path, name)
        if name in value:
            kwargs[name] = _convert(hints[name], value[name], sub, dict(f.metadata))
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            fail(sub, "missing required key")
    obj = cls(**kwargs)
    check = getattr(obj, "check", None)
    if callable(check):
        try:
            check()
        except ConfigError:
            raise
        except ValueError as e:  # "field: message" relative to this mapping
            raise ConfigError(_join(path, str(e)) if path else str(e)) from None
    return obj
