"""TOML tables -> frozen dataclasses, by the dataclass's type hints. An unknown key or a value of
the wrong type is a ConfigError naming the key ("email.relay.port: expected int, got 'x'")."""

from __future__ import annotations

import dataclasses
import types
from typing import Any, Union, get_args, get_origin, get_type_hints

from core.errors import ConfigError


def build(cls: type, table: Any, where: str) -> Any:
    if not isinstance(table, dict):
        raise ConfigError(f"{where or 'config'}: expected a table")
    hints = get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(table) - set(fields))
    if unknown:
        key = f"{where}.{unknown[0]}" if where else unknown[0]
        raise ConfigError(f"{key}: unknown setting")
    values = {}
    for name, value in table.items():
        key = f"{where}.{name}" if where else name
        values[name] = convert(hints[name], value, key)
    try:
        return cls(**values)
    except TypeError as err:
        missing = str(err).rsplit(":", 1)[-1].strip()
        raise ConfigError(f"{where}: missing required setting {missing}") from None


def convert(hint: Any, value: Any, key: str) -> Any:
    origin = get_origin(hint)
    if origin in (Union, types.UnionType):
        options = [a for a in get_args(hint) if a is not type(None)]
        return convert(options[0], value, key)
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return build(hint, value, key)
    if origin is tuple:
        if not isinstance(value, list):
            raise ConfigError(f"{key}: expected a list")
        (item,) = get_args(hint)[:1]
        return tuple(convert(item, v, f"{key}[{i}]") for i, v in enumerate(value))
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a table")
        return dict(value)
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint in (str, int, bool, float) and (
        not isinstance(value, hint) or (hint is int and isinstance(value, bool))
    ):
        raise ConfigError(f"{key}: expected {hint.__name__}, got {value!r}")
    return value
