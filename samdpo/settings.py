"""Settings: JSON objects on the command line (how Snakemake rules hand config sections over), parsed
into the frozen dataclass of their config section by one function, :func:`parse_settings`."""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from collections.abc import Mapping
from typing import Any, TypeVar

from samdpo.errors import ConfigError

T = TypeVar("T")


def json_object(text: str | None, option: str) -> dict[str, Any]:
    """Parse ``text`` as a JSON object; empty -> {}. Errors name the command-line ``option``."""
    if not text:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{option} is not valid JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise ConfigError(f"{option} must be a JSON object")
    return value


def parse_settings(cls: type[T], values: Mapping[str, Any] | None, section: str) -> T:
    """The ``cls`` dataclass of a config section from its JSON values (None: the defaults).

    Checks each key against the dataclass fields and each value against the field's annotation
    (int, float, bool, str, tuple / list, Mapping / dict, Optional, Any; a bool is no int, an int
    passes as a float and is kept as it is); the dataclass's ``__post_init__`` checks ranges.

    Raises:
        ConfigError: naming ``section.key``: an unknown key (with the known ones), a value of the
            wrong type, or a field without a default left out.
    """
    values = dict(values or {})
    known = {field.name: field for field in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ConfigError(f"{section}.{unknown[0]}: unknown setting (known: {', '.join(sorted(known))})")
    hints = typing.get_type_hints(cls)
    for key, value in values.items():
        if not _matches(value, hints[key]):
            raise ConfigError(f"{section}.{key}: expected {_describe(hints[key])}, got {value!r}")
    for name, field in known.items():
        if name not in values and field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
            raise ConfigError(f"{section}.{name}: missing setting (it has no default)")
    return cls(**values)


def _matches(value: Any, hint: Any) -> bool:
    """Whether a JSON ``value`` fits the type annotation ``hint``."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return True
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, arg) for arg in args)
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    if (origin or hint) in (tuple, list):
        item = args[0] if args else Any
        return isinstance(value, (list, tuple)) and all(_matches(v, item) for v in value)
    if (origin or hint) in (dict, Mapping):
        key, item = args if args else (Any, Any)
        return isinstance(value, Mapping) and all(_matches(k, key) and _matches(v, item) for k, v in value.items())
    return isinstance(value, origin or hint)


def _describe(hint: Any) -> str:
    """A type annotation in a config file's words (``an integer or null``)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(arg) for arg in args)
    if (origin or hint) in (tuple, list):
        return f"a list ({_describe(args[0])} each)" if args else "a list"
    if (origin or hint) in (dict, Mapping):
        return "an object (key: value)"
    words = {
        type(None): "null",
        bool: "true or false",
        int: "an integer",
        float: "a number",
        str: "a string",
        Any: "anything",
    }
    return words.get(hint, getattr(hint, "__name__", str(hint)))
