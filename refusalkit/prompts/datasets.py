"""Prompt sets: the built-in ones written for this project, loaders for users' files in the common
benchmark formats, deterministic seeded splits, and a manifest recording which prompt went where."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from refusalkit.errors import RefusalkitError

logger = logging.getLogger(__name__)

# Column names used by AdvBench (goal), HarmBench (Behavior), StrongREJECT (forbidden_prompt),
# JailbreakBench (Goal), Alpaca and our own files (instruction), XSTest/OR-Bench (prompt).
PROMPT_COLUMNS = (
    "instruction", "prompt", "goal", "Goal", "Behavior", "behavior", "forbidden_prompt",
    "question", "query", "request", "text", "turns",
)  # fmt: skip
CATEGORY_COLUMNS = ("category", "Category", "SemanticCategory", "harm_category", "type")
BUILTIN_SETS = ("harmful", "harmless", "over_refusal")


@dataclass(frozen=True)
class Prompt:
    text: str
    category: str | None = None
    # Where the prompt was read ("harmful.jsonl:12"), for error messages; not part of its identity.
    origin: str | None = field(default=None, compare=False)

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.text.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class PromptSource:
    """What a prompt list was read from, for the run record."""

    name: str  # "builtin:harmful" or a file path
    sha256: str  # of the file bytes
    column: str
    skipped_rows: int = 0  # rows of a structured file whose prompt was empty or missing


def _row_prompt(row: dict[str, Any], column: str | None, where: str) -> Prompt | None:
    key = column
    if key is None:
        key = next((c for c in PROMPT_COLUMNS if c in row), None)
        if key is None:
            raise RefusalkitError(
                f"{where}: no prompt column found (looked for {', '.join(PROMPT_COLUMNS)}); "
                f"columns are {', '.join(map(str, row))} — name one with --column"
            )
    elif key not in row:
        raise RefusalkitError(f"{where}: column '{key}' not found; columns are {', '.join(row)}")
    value = row[key]
    if isinstance(value, list):  # e.g. a list of turns: the first one is the request
        value = value[0] if value else ""
    text = str(value or "").strip()
    if not text:
        return None
    category = next((str(row[c]) for c in CATEGORY_COLUMNS if row.get(c)), None)
    return Prompt(text, category, origin=where)


def _parse_rows(path: Path, raw: str) -> list[tuple[str, Any]]:
    """(location, row) pairs; the location is a line for line-based formats, else a row/item."""
    suffix = path.suffix.lower()
    if suffix == ".txt":
        return [(f"{path}:{n}", line) for n, line in enumerate(raw.splitlines(), 1)]
    if suffix == ".csv":  # a file object, so quoted fields keep their line breaks
        reader = csv.DictReader(io.StringIO(raw, newline=""))
        return [(f"{path}:{reader.line_num}", row) for row in reader]
    if suffix == ".jsonl":
        rows = []
        # Split on newlines only: JSON strings may contain U+2028 and friends unescaped.
        for number, line in enumerate(raw.split("\n"), 1):
            if line.strip():
                try:
                    rows.append((f"{path}:{number}", json.loads(line)))
                except json.JSONDecodeError as error:
                    raise RefusalkitError(f"{path}:{number}: invalid JSON ({error.msg})") from error
        return rows
    if suffix == ".json":
        try:
            data = json.loads(raw)
        except json.JSONDecodeError as error:
            raise RefusalkitError(
                f"{path}: invalid JSON ({error.msg} at line {error.lineno})"
            ) from error
        if isinstance(data, dict):  # {"data": [...]} or {"instructions": [...]}-style wrappers
            lists = [v for v in data.values() if isinstance(v, list)]
            if len(lists) != 1:
                raise RefusalkitError(f"{path}: expected a JSON list of prompts or objects")
            data = lists[0]
        if not isinstance(data, list):
            raise RefusalkitError(f"{path}: expected a JSON list of prompts or objects")
        return [(f"{path} (item {n})", row) for n, row in enumerate(data, 1)]
    raise RefusalkitError(
        f"{path}: unsupported file type '{suffix}'; use .txt, .csv, .json or .jsonl"
    )


def parse_prompts(
    path: Path, raw: str, column: str | None = None
) -> tuple[list[Prompt], list[str]]:
    """The prompts of a file, and the locations of structured rows whose prompt was empty or
    missing (blank lines of a .txt file separate prompts and are not counted)."""
    prompts: list[Prompt] = []
    empty: list[str] = []
    for where, row in _parse_rows(path, raw):
        if isinstance(row, str):
            prompt = Prompt(row.strip(), origin=where) if row.strip() else None
            if prompt is None and path.suffix.lower() != ".txt":
                empty.append(where)
        elif isinstance(row, dict):
            prompt = _row_prompt(row, column, where)
            if prompt is None:
                empty.append(where)
        elif row is None:
            prompt = None
            empty.append(where)
        else:
            raise RefusalkitError(
                f"{where}: expected a string or an object, got {type(row).__name__}"
            )
        if prompt is not None:
            prompts.append(prompt)
    return prompts, empty


def load_prompts(path: str | Path, column: str | None = None) -> tuple[list[Prompt], PromptSource]:
    """Read prompts from a .txt (one per line), .csv, .json or .jsonl file."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise RefusalkitError(f"prompt file not found: {path}")
    data = path.read_bytes()
    try:
        raw = data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise RefusalkitError(f"{path}: not UTF-8 text") from error
    prompts, empty = parse_prompts(path, raw, column)
    if not prompts:
        raise RefusalkitError(f"{path}: no prompts found (the file is empty or every row is blank)")
    if empty:
        logger.warning(
            "%s: skipped %d row(s) with an empty or missing prompt (%s%s)",
            path, len(empty), ", ".join(empty[:3]), ", …" if len(empty) > 3 else "",
        )  # fmt: skip
    source = PromptSource(str(path), hashlib.sha256(data).hexdigest(), column or "auto", len(empty))
    return prompts, source


def builtin_prompts(name: str) -> tuple[list[Prompt], PromptSource]:
    """The project's own prompt sets: ``harmful`` (8 categories), ``harmless``, ``over_refusal``."""
    if name not in BUILTIN_SETS:
        raise RefusalkitError(
            f"unknown built-in prompt set '{name}'; use {', '.join(BUILTIN_SETS)}"
        )
    data = resources.files("refusalkit").joinpath(f"data/{name}.jsonl").read_bytes()
    prompts, _ = parse_prompts(Path(f"{name}.jsonl"), data.decode("utf-8"), "instruction")
    return prompts, PromptSource(f"builtin:{name}", hashlib.sha256(data).hexdigest(), "instruction")


# Harmful and harmless sets may share a few prompts by accident (two public lists written
# independently); those are dropped from both, since a prompt labelled both ways only blurs the
# difference in means. Sharing more than this fraction of the smaller set means the files are
# mislabelled or the same, and no direction computed from them would mean anything.
MAX_OVERLAP_FRACTION = 0.05


def _normalised(text: str) -> str:
    return " ".join(text.casefold().split())


def remove_overlap(
    harmful: Sequence[Prompt], harmless: Sequence[Prompt], names: tuple[str, str]
) -> tuple[list[Prompt], list[Prompt], int]:
    """Both lists without the prompts they share (case and whitespace ignored), and how many
    distinct prompts that was; refused above :data:`MAX_OVERLAP_FRACTION`."""
    harmful_texts = {_normalised(p.text) for p in harmful}
    harmless_texts = {_normalised(p.text) for p in harmless}
    shared = harmful_texts & harmless_texts
    if not shared:
        return list(harmful), list(harmless), 0
    smaller = min(len(harmful_texts), len(harmless_texts))
    if len(shared) > MAX_OVERLAP_FRACTION * smaller:
        raise RefusalkitError(
            f"the harmful prompts ({names[0]}) and the harmless prompts ({names[1]}) share "
            f"{len(shared)} of {smaller} distinct prompts ({len(shared) / smaller:.0%}); a "
            "refusal direction needs two different sets — check that the files are not the same "
            f"or swapped (at most {MAX_OVERLAP_FRACTION:.0%} may overlap; those are dropped)"
        )
    logger.warning(
        "%d prompt(s) are in both the harmful and the harmless set; dropped from both "
        "(recorded in splits.json)", len(shared),
    )  # fmt: skip
    return (
        [p for p in harmful if _normalised(p.text) not in shared],
        [p for p in harmless if _normalised(p.text) not in shared],
        len(shared),
    )


@dataclass(frozen=True)
class Splits:
    train: list[Prompt]
    val: list[Prompt]
    test: list[Prompt]

    def as_dict(self) -> dict[str, list[Prompt]]:
        return {"train": self.train, "val": self.val, "test": self.test}


def split_prompts(
    prompts: Sequence[Prompt], n_train: int, n_val: int, n_test: int, seed: int, label: str
) -> Splits:
    """Deduplicate, shuffle with ``seed`` and cut disjoint train/val/test splits."""
    for name, count in (("--n-train", n_train), ("--n-val", n_val), ("--n-test", n_test)):
        if count < 1:
            raise RefusalkitError(f"{name} must be at least 1 (got {count})")
    unique = list({p.text: p for p in prompts}.values())
    needed = n_train + n_val + n_test
    if len(unique) < needed:
        raise RefusalkitError(
            f"the {label} prompts have {len(unique)} distinct entries but the splits need {needed} "
            f"({n_train} train + {n_val} val + {n_test} test); lower --n-train/--n-val/--n-test "
            "or supply more prompts"
        )
    shuffled = sorted(unique, key=lambda p: p.sha256)  # independent of file order
    random.Random(f"{seed}:{label}").shuffle(shuffled)
    return Splits(
        train=shuffled[:n_train],
        val=shuffled[n_train : n_train + n_val],
        test=shuffled[n_train + n_val : needed],
    )


def split_manifest(splits: dict[str, Splits], sources: dict[str, PromptSource]) -> dict[str, Any]:
    """Which prompt went into which split, with hashes, so a run can be reproduced exactly."""
    manifest: dict[str, Any] = {}
    for label, split in splits.items():
        source = sources[label]
        manifest[label] = {
            "source": source.name,
            "source_sha256": source.sha256,
            "column": source.column,
            "skipped_rows": source.skipped_rows,
            "splits": {
                name: [{"sha256": p.sha256, "category": p.category, "text": p.text} for p in items]
                for name, items in split.as_dict().items()
            },
        }
    return manifest
