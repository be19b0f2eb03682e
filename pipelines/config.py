"""YAML configuration: ``yaml.safe_load`` into typed, frozen dataclasses.

Every YAML file this project reads (training recipes, pipelines) is validated here against a tree
of frozen dataclasses. Errors name the key path and the problem::

    train.optim.lr: expected a number, got 'fast'
    train.optm: unknown key (did you mean 'optim'?)
    data.train.batch_size: must be >= 1, got -4

Rules (also in ``pipelines/README.md``, "Rules common to both"):

- numbers written as ``2e-4`` are numbers (PyYAML's ``safe_load`` follows YAML 1.1 and reads a float
  without a dot as a string; we accept such strings where a number is expected);
- ``a.b=value`` overrides (:func:`apply_overrides`) parse ``value`` as one YAML scalar or flow
  collection with ``yaml.safe_load`` (never ``eval``); list items are addressed by index
  (``steps.1.model=x``);
- relative paths are resolved against the current directory; ``pkg://module/sub/path`` names a folder
  inside an installed package (``pkg://skimage.data``);
- :func:`save_resolved` writes the validated config (overrides applied) beside a run's outputs.

Field metadata understood by the validator: ``help`` (documentation, also in the JSON Schema),
``min`` / ``max`` (inclusive bounds), ``exists`` (``"file"``, ``"dir"`` or ``"any"``: the path must
exist), ``min_len``, ``inside`` (a folder's name: the string is a path relative to that folder that cannot
leave it: not absolute, no ``..``). A dataclass may define ``check(self)`` for cross-field rules; it raises
``ValueError("field: message")`` with the key relative to that mapping, and the validator prefixes
the mapping's own path.
"""

from __future__ import annotations

import dataclasses
import os
import typing
from pathlib import Path
from typing import Any, Literal

from .config_validation import ConfigError, build, fail, is_union, parse_number, resolve_path

__all__ = ["MAX_YAML_BYTES", "MAX_YAML_VALUES", "SCHEMAS", "SCHEMA_KINDS", "ConfigError", "apply_overrides", "build",
           "fail", "format_kinds", "json_schema", "load_config", "load_yaml_text", "merge", "parse_number",
           "parse_override", "read_yaml", "resolve_path", "save_resolved", "to_dict", "write_schemas"]

# ---------------------------------------------------------------------------------------------
# files, overrides, saving
# ---------------------------------------------------------------------------------------------


# Limits of a YAML document. Configurations are small and hand-written; these stop a file that is not
# one from exhausting memory. An alias (``*name``) refers to an anchored value without copying it, so a
# few hundred bytes of nested aliases (a "billion laughs" document) stand for billions of values, which
# everything that walks the data (validation, error messages, the saved resolved config) would expand.
MAX_YAML_BYTES = 1 << 20
MAX_YAML_VALUES = 100_000


def read_yaml(path: str | os.PathLike) -> dict:
    """``yaml.safe_load`` a file into a mapping; errors name the file.

    A top-level ``base: other.yml`` (a path relative to this file's folder) reads that file first and
    merges this one over it (:func:`merge`), so a variant of a recipe holds only what it changes.
    Refused with a :class:`ConfigError`: a file that is not UTF-8, larger than :data:`MAX_YAML_BYTES`,
    or whose aliases expand it to more than :data:`MAX_YAML_VALUES` values (or into a cycle).
    """
    return _read_yaml(Path(path), ())


def load_yaml_text(text: str, where: str) -> Any:
    """``yaml.safe_load(text)`` with the limits of :func:`read_yaml`; errors start with ``where``."""
    import yaml

    try:
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        at = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        raise ConfigError(f"{where}: not valid YAML: {e.problem or e.context}{at}") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{where}: not valid YAML: {' '.join(str(e).split())}") from None
    except RecursionError:
        raise ConfigError(f"{where}: YAML nested too deeply to be a configuration") from None
    except (ValueError, OverflowError) as e:  # a scalar PyYAML cannot build: 2001-02-30, a 5000-digit integer
        raise ConfigError(f"{where}: not valid YAML: {str(e).splitlines()[0]}") from None
    _check_size(data, where)
    return data


def _check_size(data: Any, where: str) -> None:
    """Refuse ``data`` if expanding its aliases gives more than :data:`MAX_YAML_VALUES` values or a cycle.

    Shared values are counted once per reference but visited once (memoised by identity), so the
    check itself costs time in proportion to the document, not to its expansion.
    """
    sizes: dict[int, int] = {}
    open_ids: set[int] = set()

    def size(value: Any) -> int:
        if not isinstance(value, (dict, list)):
            return 1
        key = id(value)
        if key in sizes:
            return sizes[key]
        if key in open_ids:
            raise ConfigError(f"{where}: a YAML alias refers to a value that contains it (a recursive "
                              "structure); a configuration must be a finite tree")
        open_ids.add(key)
        children = [*value.keys(), *value.values()] if isinstance(value, dict) else value
        total = 1
        for child in children:
            total += size(child)
            if total > MAX_YAML_VALUES:
                raise ConfigError(
                    f"{where}: its YAML aliases (*name) expand to more than {MAX_YAML_VALUES:,} values; refused "
                    "(nested aliases can stand for billions of values); write the values out instead")
        open_ids.discard(key)
        sizes[key] = total
        return total

    try:
        size(data)
    except RecursionError:
        raise ConfigError(f"{where}: YAML nested too deeply to be a configuration") from None


def _read_yaml(path: Path, chain: tuple[Path, ...]) -> dict:
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_YAML_BYTES + 1)
    except OSError as e:
        raise ConfigError(f"{path}: cannot read the file ({e.strerror or e})") from None
    if len(raw) > MAX_YAML_BYTES:
        raise ConfigError(f"{path}: larger than {MAX_YAML_BYTES:,} bytes; not a configuration file")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(
            f"{path}: not UTF-8 text (byte 0x{raw[e.start]:02x} at offset {e.start}); save the file as UTF-8"
        ) from None
    data = load_yaml_text(text, str(path))
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping, got {type(data).__name__}")
    if "base" not in data:
        return data
    base = data.pop("base")
    if not isinstance(base, str) or not base.strip():
        raise ConfigError(f"{path}: base: expected the name of a YAML file, got {base!r}")
    chain = (*chain, path.resolve())
    base_path = path.parent / base
    if base_path.resolve() in chain:
        names = " -> ".join(str(p) for p in (*chain, base_path.resolve()))
        raise ConfigError(f"{path}: base: the files include each other ({names})")
    if not base_path.is_file():
        raise ConfigError(f"{path}: base: {base_path}: config file not found")
    return merge(_read_yaml(base_path, chain), data)


def merge(base: dict, over: dict) -> dict:
    """``over`` merged into a copy of ``base``: mappings key by key, anything else (lists too) replaced."""
    import copy

    out = copy.deepcopy(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def parse_override(text: str) -> tuple[list[str | int], Any]:
    """``"a.b.0.c=value"`` -> (["a", "b", 0, "c"], parsed value); the value is read as YAML."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override {text!r}: expected key.path=value")
    parts: list[str | int] = []
    for p in key.strip().split("."):
        if not p:
            raise ConfigError(f"override {text!r}: empty key in {key!r}")
        parts.append(int(p) if p.isdigit() else p)
    value = load_yaml_text(raw, f"override {text!r}: value") if raw.strip() else ""
    return parts, value


def apply_overrides(data: dict, overrides: list[str] | tuple[str, ...]) -> dict:
    """Return a copy of ``data`` with each ``key.path=value`` override set (creating mappings)."""
    import copy

    data = copy.deepcopy(data)
    for text in overrides:
        keys, value = parse_override(text)
        node: Any = data
        for i, k in enumerate(keys[:-1]):
            where = ".".join(str(x) for x in keys[: i + 1])
            if isinstance(node, list):
                if not isinstance(k, int) or k >= len(node):
                    raise ConfigError(f"override {text!r}: {where}: no list item {k!r}")
                node = node[k]
            elif isinstance(node, dict):
                if node.get(k) is None:
                    node[k] = {}
                node = node[k]
            else:
                raise ConfigError(f"override {text!r}: {where} is a {type(node).__name__}, not a mapping")
            if not isinstance(node, (dict, list)):
                raise ConfigError(f"override {text!r}: {where} is a {type(node).__name__}, not a mapping")
        last = keys[-1]
        if isinstance(node, list):
            if not isinstance(last, int) or last >= len(node):
                raise ConfigError(f"override {text!r}: no list item {last!r}")
        node[last] = value
    return data


def load_config(
    cls: type,
    path: str | os.PathLike,
    overrides: list[str] | tuple[str, ...] = (),
    *,
    kinds: dict[str, type] | None = None,
) -> Any:
    """Read YAML ``path``, apply ``overrides``, validate into ``cls``; errors name the file and key.

    ``kinds``: other dataclasses chosen by the top-level ``kind`` key (after overrides), e.g.
    ``{"robustsam": RobustSamTrainConfig}`` for training recipes; any other ``kind`` goes to ``cls``.
    """
    data = apply_overrides(read_yaml(path), overrides)
    kind = data.get("kind")
    if kinds and isinstance(kind, str) and kind in kinds:
        cls = kinds[kind]
    try:
        return build(cls, data)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None


def to_dict(obj: Any) -> Any:
    """A validated config as plain YAML/JSON-able data (tuples become lists)."""
    if dataclasses.is_dataclass(obj):
        # a member of a tagged union (a pipeline step) keeps its tag (``step: restore``), which picks its
        # class when the saved file is read again
        tag = {obj.TAG_FIELD: obj.TAG} if hasattr(obj, "TAG") and hasattr(obj, "TAG_FIELD") else {}
        return {**tag, **{f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj


def save_resolved(obj: Any, path: str | os.PathLike, *, source: str | None = None, overrides=()) -> Path:
    """Write the resolved config as YAML (atomically); a header names the source file and overrides."""
    import yaml

    from robustsam_prior.core.fileio import atomic_write

    path = Path(path)
    header = "# resolved configuration written by robustsam-restore\n"
    if source:
        header += f"# source: {source}\n"
    for o in overrides:
        header += f"# override: {o}\n"
    with atomic_write(path, "w") as f:
        f.write(header)
        yaml.safe_dump(to_dict(obj), f, sort_keys=False)
    return path


# ---------------------------------------------------------------------------------------------
# JSON Schema
# ---------------------------------------------------------------------------------------------


def json_schema(cls: type, *, title: str | None = None, kinds: dict[str, type] | None = None) -> dict:
    """A JSON Schema (draft 2020-12) of the YAML format described by dataclass ``cls``.

    ``kinds`` (as in :func:`load_config`): a document whose ``kind`` is one of its keys follows that
    dataclass instead (``if``/``then`` on ``kind``); every other document follows ``cls``.
    """
    defs: dict[str, dict] = {}
    root = _schema_of(cls, {}, defs)
    for other in kinds.values() if kinds else ():
        _schema_of(other, {}, defs)
    for top in (cls, *(kinds.values() if kinds else ())):  # see read_yaml
        defs[top.__name__]["properties"]["base"] = {
            "type": "string", "description": "a YAML file (relative to this one) to read first; this file's keys "
                                             "are merged over it (mappings key by key, other values replaced)"}
    out = {"$schema": "https://json-schema.org/draft/2020-12/schema", "title": title or cls.__name__}
    if kinds:
        branch: dict[str, Any] = {"$ref": f"#/$defs/{cls.__name__}"}
        for kind, other in reversed(list(kinds.items())):  # their defs were made above
            branch = {
                "if": {"properties": {"kind": {"const": kind}}, "required": ["kind"]},
                "then": {"$ref": f"#/$defs/{other.__name__}"},
                "else": branch,
            }
        out.update(branch)
        out["$defs"] = defs
        return out
    out.update(defs[cls.__name__])
    others = {k: v for k, v in defs.items() if k != cls.__name__}
    if others:
        out["$defs"] = others
    del root
    return out


def _schema_of(tp: Any, meta: dict, defs: dict) -> dict:
    s: dict[str, Any]
    if tp is Any:
        s = {}
    elif is_union(tp):
        args = typing.get_args(tp)
        dcs = [a for a in args if dataclasses.is_dataclass(a)]
        opts = [_schema_of(a, meta, defs) for a in args]
        if len(dcs) > 1:
            s = {"oneOf": opts}
        else:
            s = {"anyOf": opts}
    elif dataclasses.is_dataclass(tp):
        name = tp.__name__
        if name not in defs:
            defs[name] = {}  # placeholder against recursion
            hints = typing.get_type_hints(tp)
            props, required = {}, []
            for f in dataclasses.fields(tp):
                if not f.init:
                    continue
                props[f.name] = _schema_of(hints[f.name], dict(f.metadata), defs)
                if f.default is not dataclasses.MISSING:
                    props[f.name]["default"] = to_dict(f.default)
                elif f.default_factory is not dataclasses.MISSING:
                    props[f.name]["default"] = to_dict(f.default_factory())
                else:
                    required.append(f.name)
            if hasattr(tp, "TAG"):
                props[tp.TAG_FIELD] = {"const": tp.TAG}
                required.append(tp.TAG_FIELD)
            d: dict[str, Any] = {"type": "object", "additionalProperties": False, "properties": props}
            if required:
                d["required"] = required
            if tp.__doc__:
                d["description"] = " ".join(tp.__doc__.split())
            defs[name] = d
        s = {"$ref": f"#/$defs/{name}"}
    else:
        origin = typing.get_origin(tp)
        if origin is Literal:
            s = {"enum": list(typing.get_args(tp))}
        elif origin in (list, tuple):
            args = typing.get_args(tp)
            if origin is tuple and args and args[-1] is not Ellipsis:
                s = {"type": "array", "prefixItems": [_schema_of(a, {}, defs) for a in args],
                     "minItems": len(args), "maxItems": len(args)}
            else:
                s = {"type": "array", "items": _schema_of(args[0] if args else Any, {}, defs)}
            if "min_len" in meta:
                s["minItems"] = meta["min_len"]
        elif origin is dict:
            s = {"type": "object"}
        elif tp is type(None):
            s = {"type": "null"}
        elif tp is bool:
            s = {"type": "boolean"}
        elif tp is int:
            s = {"type": "integer"}
        elif tp is float:
            s = {"type": "number"}
        elif tp is str:
            s = {"type": "string"}
        else:
            raise TypeError(f"config schema: unsupported type {tp!r}")
        if "min" in meta:
            s["minimum"] = meta["min"]
        if "max" in meta:
            s["maximum"] = meta["max"]
    if meta.get("help"):
        s["description"] = meta["help"]
    return s


# the file formats this project reads: schema file name -> "module:dataclass"
SCHEMAS: dict[str, str] = {
    "train": "restore.training.options:TrainConfig",
    "pipeline": "pipelines.runner:PipelineConfig",
}
# formats with other dataclasses selected by the top-level ``kind``: name -> {kind: "module:dataclass"}
SCHEMA_KINDS: dict[str, dict[str, str]] = {
    "train": {"robustsam": "robustsam_prior.training.options:RobustSamTrainConfig"},
}


def _import_target(target: str) -> type:
    import importlib

    module, attr = target.split(":")
    return getattr(importlib.import_module(module), attr)


def format_kinds(name: str) -> dict[str, type]:
    """The ``kinds`` table of format ``name`` (see :data:`SCHEMA_KINDS`), for :func:`load_config`."""
    return {kind: _import_target(t) for kind, t in SCHEMA_KINDS.get(name, {}).items()}


def write_schemas(folder: str | os.PathLike) -> list[Path]:
    """Write ``<name>.schema.json`` for every format in :data:`SCHEMAS` into ``folder``."""
    import json

    from robustsam_prior.core.fileio import atomic_write

    folder = Path(folder)
    written = []
    for name, target in SCHEMAS.items():
        cls = _import_target(target)
        path = folder / f"{name}.schema.json"
        with atomic_write(path, "w") as f:
            json.dump(json_schema(cls, title=f"robustsam-restore {name} YAML", kinds=format_kinds(name)), f, indent=2,
                      allow_nan=False)
            f.write("\n")
        written.append(path)
    return written


if __name__ == "__main__":  # python -m pipelines.config: regenerate pipelines/schema/*.json
    for p in write_schemas(Path(__file__).parent / "schema"):
        print(p)
