"""Dotted command-line overrides (``section.key=value``) applied to a config tree.

Values are parsed by the field's declared type, so ``train.batch_size=abc`` fails with
the field's name and type rather than somewhere inside training. Lists are written
``512,256,1``; dicts ``C1:16,C2:8``; booleans ``true``/``false``.
"""

from __future__ import annotations

import dataclasses
import json
import typing
from typing import Any

from torchrec_app.config.errors import ConfigError


def _field_names(obj: Any) -> list[str]:
    return [f.name for f in dataclasses.fields(obj)]


def _parse_scalar(text: str, kind: type, key: str) -> Any:
    if kind is bool:
        lowered = text.lower()
        if lowered in ("true", "1", "yes", "on"):
            return True
        if lowered in ("false", "0", "no", "off"):
            return False
        raise ConfigError(f"{key}: expected true or false, got {text!r}")
    try:
        return kind(text)
    except ValueError:
        raise ConfigError(f"{key}: expected {kind.__name__}, got {text!r}") from None


def parse_value(text: str, annotation: Any, key: str) -> Any:
    """Parse ``text`` as a value of type ``annotation`` (scalar, ``list[T]`` or ``dict[str, T]``).

    Lists and dicts also take JSON (``[512, 256, 1]``, ``{"C3": "qr:4:mult"}``), which is
    what a value holding ``,`` or ``:`` needs.

    >>> parse_value("512,256,1", list[int], "model.over_arch")
    [512, 256, 1]
    >>> parse_value("C1:16,C2:8", dict[str, int], "sparse.dims")
    {'C1': 16, 'C2': 8}
    >>> parse_value('{"C3": "qr:4:mult", "C7": "hash:2"}', dict[str, str], "sparse.compress")
    {'C3': 'qr:4:mult', 'C7': 'hash:2'}
    >>> parse_value("", list[str], "sharding.types")
    []
    """
    origin = typing.get_origin(annotation)
    if origin in (list, dict) and text.lstrip()[:1] in ("[", "{"):
        return _parse_json(text, annotation, key)
    if origin is list:
        (item,) = typing.get_args(annotation)
        return [_parse_scalar(part.strip(), item, key) for part in text.split(",") if part.strip()]
    if origin is dict:
        _, item = typing.get_args(annotation)
        result = {}
        for part in filter(None, (p.strip() for p in text.split(","))):
            name, sep, value = part.partition(":")
            if not sep:
                raise ConfigError(f"{key}: expected name:value pairs separated by commas, got {part!r}")
            result[name.strip()] = _parse_scalar(value.strip(), item, key)
        return result
    return _parse_scalar(text, annotation, key)


def _parse_json(text: str, annotation: Any, key: str) -> Any:
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise ConfigError(f"{key}: not valid JSON ({err.msg} at character {err.pos}): {text[:80]!r}") from None
    expected = {list: "a JSON list", dict: "a JSON object"}[origin]
    if not isinstance(value, origin):
        raise ConfigError(f"{key}: expected {expected}, got {text[:80]!r}")
    item = args[-1]
    items = value.values() if origin is dict else value
    for v in items:
        if not isinstance(v, item) or (item is int and isinstance(v, bool)):
            raise ConfigError(f"{key}: expected {item.__name__} values, got {v!r}")
    return value


def apply_overrides(config: Any, overrides: list[str]) -> Any:
    """Return a copy of dataclass ``config`` with each ``a.b.c=value`` applied and validated.

    Sections are rebuilt with :func:`dataclasses.replace`, so each section's
    ``__post_init__`` validation runs on the new values.
    """
    for override in overrides:
        key, sep, text = override.partition("=")
        if not sep or not key:
            raise ConfigError(f"override {override!r}: expected section.key=value")
        config = _apply_one(config, key.split("."), text, key)
    return config


def _apply_one(node: Any, path: list[str], text: str, key: str) -> Any:
    name = path[0]
    if not dataclasses.is_dataclass(node) or name not in _field_names(node):
        valid = ", ".join(_field_names(node)) if dataclasses.is_dataclass(node) else "(none)"
        raise ConfigError(f"unknown config key {key!r}: {name!r} is not one of {valid}")
    current = getattr(node, name)
    if len(path) == 1:
        if dataclasses.is_dataclass(current):
            raise ConfigError(f"{key} is a section; set one of its keys: {', '.join(_field_names(current))}")
        annotation = typing.get_type_hints(type(node))[name]
        value = parse_value(text, annotation, key)
    else:
        value = _apply_one(current, path[1:], text, key)
    try:
        return dataclasses.replace(node, **{name: value})
    except (ValueError, TypeError) as err:
        raise ConfigError(str(err)) from None
