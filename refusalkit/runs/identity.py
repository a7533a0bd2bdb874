"""What a run was computed from, by content: the resume key of a run directory.

A run's identity is its inputs, not their paths. Swapping the model directory behind the same path,
or editing a prompt file between an interruption and the rerun, must never let the rerun reuse
candidates computed from the old contents. So the key is the configuration plus:

- the sha256 of every prompt source (harmful, harmless, over-refusal, refusal phrases);
- the model's fingerprint: for a local directory the sha256 of every file in it (weights, config,
  tokenizer, chat template), cached by (size, modification time) so a 70B directory is hashed once
  and not on every run; for an embedded model or a GGUF file the checksums its verified conversion
  marker lists; for a hub id the commit of the locally cached snapshot.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any

from refusalkit.io import write_json
from refusalkit.models.registry import MARKER, cache_dir, sha256_file

logger = logging.getLogger(__name__)

HASH_CACHE = "file-hashes.json"
# Files at least this large are announced while they are hashed (the first time only).
ANNOUNCE_BYTES = 1 << 30


def _hash_cache_path() -> Path:
    return cache_dir() / HASH_CACHE


def _read_hash_cache() -> dict[str, Any]:
    try:
        data = json.loads(_hash_cache_path().read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return {}  # no cache yet, or a damaged one: hash again, never trust it
    return data if isinstance(data, dict) else {}


def cached_sha256(path: Path, cache: dict[str, Any]) -> str:
    """sha256 of ``path``, reused from ``cache`` while its size and mtime are unchanged."""
    stat = path.stat()
    key = str(path.resolve())
    entry = cache.get(key)
    if (
        isinstance(entry, dict)
        and entry.get("size") == stat.st_size
        and entry.get("mtime_ns") == stat.st_mtime_ns
        and isinstance(entry.get("sha256"), str)
    ):
        return str(entry["sha256"])
    if stat.st_size >= ANNOUNCE_BYTES:
        logger.info("hashing %s (%.1f GB; once, then cached by size and time)", path,
                    stat.st_size / 1e9)  # fmt: skip
    digest = sha256_file(path)
    cache[key] = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": digest}
    return digest


def _visible_files(directory: Path) -> list[Path]:
    """Regular files under ``directory``; hidden entries (``.git``, ``.cache`` download metadata
    that changes without the model changing) are not part of a model."""
    files = []
    for root, dirs, names in os.walk(directory):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        files += [Path(root) / n for n in sorted(names) if not n.startswith(".")]
    return [f for f in files if f.is_file()]


def directory_fingerprint(directory: Path) -> dict[str, str]:
    """sha256 of every visible file in a model directory (relative POSIX path -> digest)."""
    cache = _read_hash_cache()
    before = dict(cache)  # entries are replaced, never mutated: a shallow copy tells what changed
    hashes = {
        path.relative_to(directory).as_posix(): cached_sha256(path, cache)
        for path in _visible_files(directory)
    }
    if cache != before:
        try:
            write_json(_hash_cache_path(), cache)
        except OSError as error:  # an unwritable cache costs time, not correctness
            logger.warning("could not update the hash cache %s (%s)", _hash_cache_path(), error)
    return hashes


def hub_commit(model_id: str, revision: str | None = None) -> str | None:
    """The commit of the locally cached snapshot of a hub model, or None if none is cached."""
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None
    found = try_to_load_from_cache(model_id, "config.json", revision=revision)
    return Path(found).parent.name if isinstance(found, str) else None


def model_fingerprint(
    kind: str, spec: str, path: str, revision: str | None = None
) -> dict[str, Any]:
    """The content identity of a resolved model (see the module docstring)."""
    if kind in ("embedded", "gguf"):
        # The conversion marker was verified against every file just before this is called.
        marker = json.loads((Path(path) / MARKER).read_text(encoding="utf-8"))
        return {"kind": kind, "source_sha256": marker["source_gguf_sha256"],
                "files": marker["files"]}  # fmt: skip
    if kind == "directory":
        return {"kind": kind, "files": directory_fingerprint(Path(path))}
    return {"kind": kind, "id": spec, "revision": revision, "commit": hub_commit(spec, revision)}


def json_digest(value: dict[str, Any]) -> str:
    """A short sha256 of a JSON-able dict (keys sorted): the digest of a configuration or of a
    model's content identity."""
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()[:16]


def model_checksum(fingerprint: dict[str, Any]) -> str:
    """One short string for a model's content identity (the weights' hashes or hub commit): what a
    Latent Guard and an exported checkpoint record, and check, about their source model."""
    return json_digest(fingerprint)


def describe_difference(stored: dict[str, Any], current: dict[str, Any]) -> str:
    """The first input that differs between two identities, in words."""
    for name in sorted(set(stored) | set(current)):
        if stored.get(name) == current.get(name):
            continue
        if name == "model":
            return "the model's files changed (same path, different contents)"
        if name == "workflow":
            return f"it was made by `refusalkit {stored.get(name)}`, not `{current.get(name)}`"
        if name == "config":
            old, new = stored.get(name) or {}, current.get(name) or {}
            keys = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
            return f"the settings differ ({', '.join(keys[:4])})"
        return f"the {name.replace('_', ' ')} changed (its contents' sha256 differs)"
    return "nothing"
