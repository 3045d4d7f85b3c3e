"""Typed configuration: YAML sections into dataclasses, checked when the file is loaded.

Every configuration of the toolkit (dataprep's stages, the model, training, evaluation) is a tree of
dataclasses whose annotations are the schema. `from_mapping` builds one from a plain mapping and
refuses, with the file and the dotted key named, any key the dataclass does not have and any value
whose type does not match its annotation, so a misspelt key or a quoted number is one clear error at
load time instead of a silent default or a crash deep inside a run.

Supported annotations: dataclasses (nested sections), int, float (ints accepted), str, bool, None,
Optional/unions, Literal, Any, list[T], tuple[T, ...] and tuple[A, B] (YAML lists accepted),
dict[K, V] (keys converted when YAML wrote them as another scalar, e.g. "1" for an int key).
"""
from __future__ import annotations

import dataclasses
import os
import types
import typing
from pathlib import Path
from typing import Any, Literal, TypeVar, Union

import yaml

T = TypeVar("T")


class ConfigError(ValueError):
    """A configuration that cannot be used; the message names the file and the key."""


def _where(source: str | None, path: str) -> str:
    head = f"{source}: " if source else ""
    return f"{head}{path or '<top level>'}"


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, path: str, source: str | None) -> Any:
    """`value` checked (and, where lossless, converted) against annotation `tp`."""
    if tp is Any or tp is object:
        return value
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)

    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for option in args:
            if option is type(None):
                continue
            try:
                return _coerce(value, option, path, source)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(f"{_where(source, path)}: expected {_type_name(tp)}, got {value!r}")
    if origin is Literal:
        if value in args:
            return value
        raise ConfigError(f"{_where(source, path)}: must be one of {list(args)}, got {value!r}")
    if dataclasses.is_dataclass(tp):
        return from_mapping(tp, value, where=path, source=source)
    if origin is list or tp is list:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{_where(source, path)}: expected a list, got {value!r}")
        item = args[0] if args else Any
        return [_coerce(v, item, f"{path}[{i}]", source) for i, v in enumerate(value)]
    if origin is tuple or tp is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{_where(source, path)}: expected a list, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0], f"{path}[{i}]", source) for i, v in enumerate(value))
        if args and len(args) != len(value):
            raise ConfigError(f"{_where(source, path)}: expected {len(args)} values, got {len(value)}")
        return tuple(_coerce(v, a, f"{path}[{i}]", source) for i, (v, a) in enumerate(zip(value, args or [Any] * len(value))))
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{_where(source, path)}: expected a mapping, got {value!r}")
        kt, vt = args if args else (Any, Any)
        out = {}
        for k, v in value.items():
            key = k
            if kt is int and isinstance(k, str):
                try:
                    key = int(k)
                except ValueError:
                    raise ConfigError(f"{_where(source, path)}: key {k!r} is not an integer") from None
            key = _coerce(key, kt, f"{path}.{k}", source)
            out[key] = _coerce(v, vt, f"{path}.{k}", source)
        return out
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif tp is str:
        if isinstance(value, str):
            return value
    elif tp is type(None):
        if value is None:
            return None
    elif isinstance(tp, type):
        if isinstance(value, tp):
            return value
    else:  # an annotation this module does not know: accept rather than guess
        return value
    raise ConfigError(f"{_where(source, path)}: expected {_type_name(tp)}, got {value!r} ({type(value).__name__})")


def from_mapping(cls: type[T], data: Any, *, where: str = "", source: str | os.PathLike | None = None) -> T:
    """An instance of dataclass `cls` from a mapping; None or a missing section gives the defaults.

    Unknown keys and mistyped values raise ConfigError naming `source` (the file) and the dotted key.
    Checks in the dataclass's `__post_init__` run as usual; a ValueError there is re-raised as a
    ConfigError with the same location.
    """
    source = str(source) if source is not None else None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{_where(source, where)}: expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    # Fields marked `metadata={"internal": True}` (e.g. where a config was loaded from) are not read.
    known = {f.name: f for f in dataclasses.fields(cls) if f.init and not f.metadata.get("internal")}
    unknown = sorted(str(k) for k in set(data) - set(known))
    if unknown:
        raise ConfigError(f"{_where(source, where)}: unknown key(s) {', '.join(unknown)}; "
                          f"known: {', '.join(sorted(known))}")
    kwargs = {name: _coerce(value, hints[name], f"{where}.{name}" if where else name, source)
              for name, value in data.items()}
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{_where(source, where)}: {e}") from e


def read_yaml_mapping(path: str | os.PathLike) -> dict:
    """The top-level mapping of a YAML file (an empty file is an empty mapping)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from e
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping, got {type(data).__name__}")
    return data


def load_yaml(cls: type[T], path: str | os.PathLike) -> T:
    """An instance of dataclass `cls` from a YAML file, validated (see `from_mapping`)."""
    return from_mapping(cls, read_yaml_mapping(path), source=path)


def to_dict(obj: Any) -> dict:
    """The plain-dict form of a config dataclass (what `from_mapping` reads back)."""
    return dataclasses.asdict(obj)
