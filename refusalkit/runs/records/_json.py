"""What every record module shares: the schema version, the JSON object type and the helpers
for the parts a file may lack."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from refusalkit.errors import RefusalkitError

# Version 1 is the layout below; files written before the key existed have that layout too.
SCHEMA_VERSION = 1
Json = dict[str, Any]


def check_version(data: Mapping[str, Any], what: str) -> None:
    version = data.get("schema_version", SCHEMA_VERSION)
    if version != SCHEMA_VERSION:
        raise RefusalkitError(
            f"{what} has schema_version {version}; this refusalkit reads version "
            f"{SCHEMA_VERSION}: use the refusalkit version that wrote it"
        )


def optional(data: Mapping[str, Any], key: str) -> Any:
    """The value of a key that some files lack (``None`` there)."""
    return data.get(key)


def put(out: Json, key: str, value: Any) -> None:
    """Write an optional part only where the run has it."""
    if value is not None:
        out[key] = value
