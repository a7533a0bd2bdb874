"""Atomic artifact writing: every file is written to a temporary sibling and renamed into place,
so an interrupted run never leaves a truncated file that looks complete. Reading an artifact that
is not what refusalkit wrote (edited by hand, truncated by a full disk elsewhere) is a one-line
:class:`RefusalkitError` naming the file, never a traceback."""

from __future__ import annotations

import json
import math
import os
import re
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from refusalkit.errors import RefusalkitError


def _process_umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


# mkstemp creates 0600 files; artifacts get the mode any other file of this user would get
# (0644 under the usual umask), so collaborators and web servers can read a run directory.
_FILE_MODE = 0o666 & ~_process_umask()


def _publish(tmp: str, path: Path) -> None:
    os.chmod(tmp, _FILE_MODE)
    os.replace(tmp, path)


# Every atomic write goes through a temporary ".<name>.<8 random chars>.tmp" beside its target.
_TEMPORARY = re.compile(r"^\..+\.[a-z0-9_]{8}\.tmp$")


def _temporary_for(path: Path) -> tuple[int, str]:
    return tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")


def is_temporary(name: str) -> bool:
    """Whether a file name is one of refusalkit's in-flight atomic-write temporaries (another
    process may be writing it right now)."""
    return bool(_TEMPORARY.match(name))


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = _temporary_for(path)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        _publish(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text(path: Path, text: str) -> None:
    _atomic_write_bytes(path, text.encode("utf-8"))


def _finite(obj: Any) -> Any:
    """NaN and infinities become null: strict JSON, readable by every parser."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {key: _finite(value) for key, value in obj.items()}
    if isinstance(obj, list | tuple):
        return [_finite(value) for value in obj]
    return obj


def write_json(path: Path, obj: Any) -> None:
    write_text(path, json.dumps(_finite(obj), indent=2, ensure_ascii=False, allow_nan=False) + "\n")


def write_jsonl(path: Path, rows: Iterable[Mapping[str, Any]]) -> None:
    write_text(path, "".join(json.dumps(dict(row), ensure_ascii=False) + "\n" for row in rows))


def _unreadable(path: Path, error: Exception) -> RefusalkitError:
    detail = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return RefusalkitError(
        f"{path} is not a readable refusalkit file ({detail}); it was changed outside "
        "refusalkit — restore it, or start the run again with --force or another --out"
    )


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise _unreadable(path, error) from error


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    rows = []
    try:
        for line in path.read_text(encoding="utf-8").split("\n"):
            if line.strip():
                row = json.loads(line)
                if not isinstance(row, dict):
                    raise ValueError("a line is not a JSON object")
                rows.append(row)
    except (UnicodeDecodeError, ValueError) as error:
        raise _unreadable(path, error) from error
    return rows


def write_tensors(
    path: Path, tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str] | None = None
) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = _temporary_for(path)
    os.close(fd)
    try:
        contiguous = {name: t.detach().cpu().contiguous() for name, t in tensors.items()}
        save_file(contiguous, tmp, metadata=dict(metadata) if metadata else None)
        _publish(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_tensors(path: Path, names: Iterable[str] = ()) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file; ``names`` must all be present."""
    try:
        tensors = load_file(str(path))
    except OSError:
        raise
    except Exception as error:  # safetensors raises its own error type for a malformed header
        raise _unreadable(path, error) from error
    missing = [name for name in names if name not in tensors]
    if missing:
        raise _unreadable(path, KeyError(f"no tensor {', '.join(missing)}"))
    return tensors


def read_tensor_metadata(path: Path) -> dict[str, str]:
    """The string metadata stored in a safetensors file's header (empty when it has none)."""
    try:
        with safe_open(str(path), framework="pt") as handle:
            return dict(handle.metadata() or {})
    except OSError:
        raise
    except Exception as error:  # a malformed header, as in read_tensors
        raise _unreadable(path, error) from error
