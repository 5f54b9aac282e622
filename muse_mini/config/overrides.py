"""Dotted-path overrides (``"base.depth=4"``), and configs back from JSON.

Overrides are parsed against the dataclass field types, so ``base.depth=four``
is an error naming the override, not a string that fails later.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from pathlib import Path

from muse_mini.config.schema import MuseConfig

def _parse_value(text: str, typ, where: str):
    origin = typing.get_origin(typ)
    args = typing.get_args(typ)
    if origin in (typing.Union, types.UnionType):
        if text.lower() in ("none", "null") and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _parse_value(text, inner[0], where)
    if typ is bool:
        if text.lower() in ("1", "true", "yes"):
            return True
        if text.lower() in ("0", "false", "no"):
            return False
        raise ValueError(f"{where}: expected true/false, got {text!r}")
    if origin is tuple:
        parts = [p for p in text.strip("()[] ").split(",") if p.strip()]
        return tuple(_parse_value(p.strip(), args[0], where) for p in parts)
    try:
        return typ(text)
    except (TypeError, ValueError):
        raise ValueError(f"{where}: expected {getattr(typ, '__name__', typ)}, got {text!r}") from None


def _field_types(obj) -> dict:
    hints = typing.get_type_hints(type(obj))
    return {f.name: hints[f.name] for f in dataclasses.fields(obj)}


def apply_overrides(cfg, overrides: typing.Sequence[str]):
    """Apply ``"a.b=value"`` overrides to a frozen dataclass tree, type-checked."""
    for item in overrides:
        item = item.removeprefix("--")
        if "=" not in item:
            raise ValueError(f"override {item!r}: expected the form section.field=value")
        path, text = item.split("=", 1)
        cfg = _replace_path(cfg, path.split("."), text, path)
    return cfg


def _replace_path(obj, keys, text, full):
    types = _field_types(obj)
    key = keys[0]
    if key not in types:
        raise ValueError(
            f"override {full!r}: {type(obj).__name__} has no field {key!r}; "
            f"fields are {sorted(types)}"
        )
    if len(keys) == 1:
        if dataclasses.is_dataclass(getattr(obj, key)):
            raise ValueError(f"override {full!r}: {key!r} is a section; name one of its fields")
        value = _parse_value(text, types[key], f"override {full!r}")
    else:
        value = _replace_path(getattr(obj, key), keys[1:], text, full)
    return dataclasses.replace(obj, **{key: value})


def from_dict(cls, data: dict):
    """Rebuild a (nested) config dataclass from :func:`dataclasses.asdict` output."""
    types = typing.get_type_hints(cls)
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name not in data:
            continue
        value, typ = data[f.name], types[f.name]
        if dataclasses.is_dataclass(typ):
            value = from_dict(typ, value)
        elif typing.get_origin(typ) is tuple:
            value = tuple(value)
        kwargs[f.name] = value
    unknown = set(data) - {f.name for f in dataclasses.fields(cls)}
    if unknown:
        raise ValueError(f"{cls.__name__}: unknown fields {sorted(unknown)}")
    return cls(**kwargs)


def read_json(path, what: str = "JSON file") -> dict:
    """A JSON object from ``path``; a damaged file gets an error naming it, not a parser trace."""
    path = Path(path)
    try:
        obj = json.loads(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no such {what}") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: not a valid {what} ({e})") from None
    if not isinstance(obj, dict):
        raise ValueError(f"{path}: expected a JSON object in this {what}, got {type(obj).__name__}")
    return obj


def load_config(path) -> MuseConfig:
    """Read a ``config.json`` written by :meth:`MuseConfig.to_json <muse_mini.config.schema.MuseConfig.to_json>`;
    a damaged file is named in the error."""
    data = read_json(path, "config file")
    try:
        return from_dict(MuseConfig, data)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{path}: {e}") from None
