"""Frozen dataclasses to and from JSON, by their type hints: the one codec of every record we write.

`load_record(cls, data)` builds nested records, tuples and mappings from schema-checked JSON (keys a
newer writer added are ignored); `dump_record(obj)` writes them back as plain JSON (lists for
tuples, fields that are None left out).
"""

from __future__ import annotations

import collections.abc
import dataclasses
import functools
import types
import typing
from typing import Any, Union


@functools.lru_cache(maxsize=None)
def _hints(cls) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _convert(hint, value):
    if value is None:
        return None
    origin = typing.get_origin(hint)
    if origin in (Union, types.UnionType):
        options = [a for a in typing.get_args(hint) if a is not type(None)]
        return _convert(options[0], value) if len(options) == 1 else value
    if dataclasses.is_dataclass(hint):
        return load_record(hint, value)
    if hint is tuple:
        return tuple(value)
    if origin is tuple:
        args = typing.get_args(hint)
        item = args[0] if len(args) == 2 and args[1] is Ellipsis else None
        if item is None:
            return tuple(_convert(a, v) for a, v in zip(args, value))
        return tuple(_convert(item, v) for v in value)
    if origin in (dict, collections.abc.Mapping) or hint is dict:
        args = typing.get_args(hint)
        return {k: _convert(args[1], v) for k, v in value.items()} if args else dict(value)
    return value


def load_record(cls, data: dict):
    """A dataclass of type `cls` from JSON data (nested records by their type hints)."""
    hints = _hints(cls)
    known = {f.name for f in dataclasses.fields(cls) if f.init}
    return cls(**{k: _convert(hints[k], v) for k, v in data.items() if k in known})


def _required(f: dataclasses.Field) -> bool:
    return f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING


def dump_record(obj) -> Any:
    """Plain JSON data of a record: dataclasses as objects (optional fields that are None left out),
    tuples as lists."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: dump_record(getattr(obj, f.name)) for f in dataclasses.fields(obj)
                if f.metadata.get("json", True) and (getattr(obj, f.name) is not None or _required(f))}
    if isinstance(obj, (list, tuple)):
        return [dump_record(v) for v in obj]
    if isinstance(obj, dict):
        return {k: dump_record(v) for k, v in obj.items()}
    return obj
