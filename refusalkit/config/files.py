"""Configuration files: the settings of a run from a TOML or JSON file (a run directory's
``config.json`` included), each plain value checked against its field's type."""

from __future__ import annotations

import json
import tomllib
import types
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

from refusalkit.errors import RefusalkitError


def read_config_file(path: str | Path) -> dict[str, Any]:
    """Settings from a TOML or JSON file, keyed by field name (``n_train``, not ``--n-train``).
    A run directory's ``config.json`` is such a file; ``{"config": {...}, ...}`` (a record that
    wraps the settings) is accepted too and only its ``config`` is read."""
    file = Path(path).expanduser()
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise RefusalkitError(f"config file not found: {file}") from None
    except (OSError, UnicodeDecodeError) as error:
        raise RefusalkitError(f"cannot read config file {file}: {error}") from None
    # TOML by suffix; anything else that looks like JSON is read as JSON, the rest as TOML.
    as_json = file.suffix.lower() == ".json" or (
        file.suffix.lower() != ".toml" and text.lstrip().startswith("{")
    )
    try:
        data = json.loads(text) if as_json else tomllib.loads(text)
    except json.JSONDecodeError as error:
        raise RefusalkitError(f"config file {file}: invalid JSON ({error})") from None
    except tomllib.TOMLDecodeError as error:
        raise RefusalkitError(f"config file {file}: invalid TOML ({error})") from None
    if not isinstance(data, dict):
        raise RefusalkitError(f"config file {file}: expected a table of settings")
    wrapped = data.get("config")
    return dict(wrapped) if isinstance(wrapped, dict) else data


def coerce_setting(key: str, hint: Any, value: Any, source: str) -> Any:
    """The plain value of setting ``key`` as its field's type ``hint``; an error naming the
    setting, the type and ``source`` when it is not of that type."""
    converted = _convert(hint, value)
    if converted is _WRONG:
        raise RefusalkitError(f"{source}: '{key}' must be {_describe(hint)} (got {value!r})")
    return converted


_WRONG = object()  # _convert's "this value is not of that type"


def _convert(hint: Any, value: Any) -> Any:
    """``value`` as ``hint``'s type (an int is a float too), or ``_WRONG``."""
    origin = get_origin(hint)
    if origin in (Union, types.UnionType):
        if value is None and type(None) in get_args(hint):
            return None
        results = [_convert(arm, value) for arm in get_args(hint) if arm is not type(None)]
        return next((result for result in results if result is not _WRONG), _WRONG)
    if origin is Literal:  # membership is validate()'s, with its own message
        return value if isinstance(value, str) else _WRONG
    if origin is list:
        if not isinstance(value, list):
            return _WRONG
        items = [_convert(get_args(hint)[0], item) for item in value]
        return _WRONG if any(item is _WRONG for item in items) else items
    if origin is dict:
        return dict(value) if isinstance(value, dict) else _WRONG
    if hint is bool:
        return value if isinstance(value, bool) else _WRONG
    if hint is int:
        return value if isinstance(value, int) and not isinstance(value, bool) else _WRONG
    if hint is float:
        number = isinstance(value, int | float) and not isinstance(value, bool)
        return float(value) if number else _WRONG
    if hint is str:
        return value if isinstance(value, str) else _WRONG
    return value  # Any


def _describe(hint: Any) -> str:
    origin = get_origin(hint)
    if origin in (Union, types.UnionType):
        return " or ".join(
            "null" if arm is type(None) else _describe(arm) for arm in get_args(hint)
        )
    if origin is Literal:
        return "one of " + ", ".join(get_args(hint))
    if origin is list:
        return f"a list of {_describe(get_args(hint)[0]).split(' ', 1)[1]}s"
    if origin is dict:
        return "a table"
    words = {bool: "a boolean", int: "an integer", float: "a number", str: "a string"}
    return words.get(hint, "a value")
