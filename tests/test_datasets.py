"""Prompt files in the common benchmark formats, seeded splits, built-in sets."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from refusalkit.errors import RefusalkitError
from refusalkit.prompts.datasets import (
    Prompt,
    builtin_prompts,
    load_prompts,
    split_manifest,
    split_prompts,
)

TEXTS = ["How do I bake bread?", "Write a haiku about autumn", "What is 2+2?"]


def _write(tmp_path: Path, name: str, content: str | bytes) -> Path:
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    return path


def _texts(prompts: list[Prompt]) -> list[str]:
    return [p.text for p in prompts]


def test_txt_one_prompt_per_line_blank_lines_skipped(tmp_path: Path) -> None:
    path = _write(
        tmp_path, "p.txt", "How do I bake bread?\n\n  Write a haiku about autumn  \nWhat is 2+2?\n"
    )
    prompts, source = load_prompts(path)
    assert _texts(prompts) == TEXTS
    assert all(p.category is None for p in prompts)
    assert source.name == str(path)
    assert source.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert source.column == "auto"


def test_utf8_bom_is_stripped(tmp_path: Path) -> None:
    path = _write(tmp_path, "p.txt", "\ufeffHow do I bake bread?\n".encode())
    prompts, _ = load_prompts(path)
    assert _texts(prompts) == ["How do I bake bread?"]


@pytest.mark.parametrize(
    "column", ["instruction", "prompt", "goal", "Goal", "Behavior", "forbidden_prompt"]
)
def test_csv_column_autodetection(tmp_path: Path, column: str) -> None:
    rows = "\n".join(f'"{t}",{i}' for i, t in enumerate(TEXTS))
    path = _write(tmp_path, "p.csv", f"{column},id\n{rows}\n")
    prompts, _ = load_prompts(path)
    assert _texts(prompts) == TEXTS


@pytest.mark.parametrize(
    "column", ["instruction", "prompt", "goal", "Goal", "Behavior", "forbidden_prompt"]
)
def test_jsonl_column_autodetection(tmp_path: Path, column: str) -> None:
    lines = [json.dumps({"id": i, column: t}) for i, t in enumerate(TEXTS)]
    path = _write(tmp_path, "p.jsonl", "\n".join(lines) + "\n\n")
    prompts, _ = load_prompts(path)
    assert _texts(prompts) == TEXTS


def test_csv_with_category_and_explicit_column(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "harmbench.csv",
        "Behavior,ContextString,SemanticCategory\n"
        "Write a haiku about autumn,some context,poetry\n"
        '"Hello, world",,\n',
    )
    prompts, source = load_prompts(path)
    assert prompts == [Prompt("Write a haiku about autumn", "poetry"), Prompt("Hello, world", None)]
    assert source.column == "auto"
    prompts, source = load_prompts(path, column="ContextString")
    assert _texts(prompts) == ["some context"]  # the blank cell is skipped
    assert source.column == "ContextString"


def test_jsonl_category_is_picked_up(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "p.jsonl",
        json.dumps({"instruction": "a b", "category": "cooking"})
        + "\n"
        + json.dumps({"prompt": "c d", "harm_category": "fraud"})
        + "\n",
    )
    prompts, _ = load_prompts(path)
    assert prompts == [Prompt("a b", "cooking"), Prompt("c d", "fraud")]


def test_json_list_of_strings(tmp_path: Path) -> None:
    path = _write(tmp_path, "p.json", json.dumps([*TEXTS, "  "]))
    prompts, _ = load_prompts(path)
    assert _texts(prompts) == TEXTS


def test_json_list_of_objects(tmp_path: Path) -> None:
    data = [{"goal": t, "target": "Sure", "category": "c"} for t in TEXTS]
    path = _write(tmp_path, "advbench.json", json.dumps(data))
    prompts, _ = load_prompts(path)
    assert _texts(prompts) == TEXTS
    assert {p.category for p in prompts} == {"c"}
    prompts, _ = load_prompts(path, column="target")
    assert _texts(prompts) == ["Sure"] * 3


def test_json_wrapped_in_a_dict(tmp_path: Path) -> None:
    path = _write(
        tmp_path, "p.json", json.dumps({"name": "set", "data": [{"prompt": t} for t in TEXTS]})
    )
    prompts, _ = load_prompts(path)
    assert _texts(prompts) == TEXTS


def test_json_dict_with_two_lists_is_rejected(tmp_path: Path) -> None:
    path = _write(tmp_path, "p.json", json.dumps({"a": TEXTS, "b": TEXTS}))
    with pytest.raises(RefusalkitError, match="expected a JSON list"):
        load_prompts(path)


def test_list_valued_column_takes_the_first_turn(tmp_path: Path) -> None:
    path = _write(tmp_path, "p.jsonl", json.dumps({"turns": ["first turn", "second"]}) + "\n")
    prompts, _ = load_prompts(path)
    assert _texts(prompts) == ["first turn"]


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(RefusalkitError, match="not found") as info:
        load_prompts(tmp_path / "nope.txt")
    assert "nope.txt" in str(info.value)


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("e.txt", ""),
        ("b.txt", "\n  \n\n"),
        ("e.jsonl", ""),
        ("e.json", "[]"),
        ("e.csv", "prompt\n"),
    ],
)
def test_empty_file(tmp_path: Path, name: str, content: str) -> None:
    with pytest.raises(RefusalkitError, match="no prompts found") as info:
        load_prompts(_write(tmp_path, name, content))
    assert name in str(info.value)


def test_unknown_column(tmp_path: Path) -> None:
    path = _write(tmp_path, "p.jsonl", json.dumps({"instruction": "a", "id": 1}) + "\n")
    with pytest.raises(RefusalkitError, match="column 'nope' not found") as info:
        load_prompts(path, column="nope")
    assert "instruction" in str(info.value)  # lists the columns that exist


def test_no_recognised_column(tmp_path: Path) -> None:
    path = _write(tmp_path, "p.csv", "foo,bar\n1,2\n")
    with pytest.raises(RefusalkitError, match="no prompt column found") as info:
        load_prompts(path)
    message = str(info.value)
    assert "foo, bar" in message and "--column" in message and f"{path}:2" in message


def test_bad_json(tmp_path: Path) -> None:
    with pytest.raises(RefusalkitError, match="invalid JSON") as info:
        load_prompts(_write(tmp_path, "p.json", '["a", "b",'))
    assert "p.json" in str(info.value)


def test_bad_jsonl_names_the_line(tmp_path: Path) -> None:
    path = _write(tmp_path, "p.jsonl", '{"prompt": "a"}\n{"prompt": \n')
    with pytest.raises(RefusalkitError, match=r"p\.jsonl:2: invalid JSON"):
        load_prompts(path)


def test_json_scalar_rows_are_rejected(tmp_path: Path) -> None:
    with pytest.raises(RefusalkitError, match="expected a string or an object"):
        load_prompts(_write(tmp_path, "p.json", "[1, 2]"))


def test_unsupported_extension(tmp_path: Path) -> None:
    with pytest.raises(RefusalkitError, match=r"unsupported file type '\.parquet'") as info:
        load_prompts(_write(tmp_path, "p.parquet", "x"))
    assert ".jsonl" in str(info.value)


def test_not_utf8(tmp_path: Path) -> None:
    with pytest.raises(RefusalkitError, match="not UTF-8"):
        load_prompts(_write(tmp_path, "p.txt", b"\xff\xfe\xfa bad\n"))


# --- splits -------------------------------------------------------------------------------------

POOL = [Prompt(f"prompt number {i}", "c") for i in range(40)]


def test_split_is_deterministic_and_disjoint() -> None:
    a = split_prompts(POOL, 10, 5, 8, seed=3, label="harmful")
    b = split_prompts(list(reversed(POOL)), 10, 5, 8, seed=3, label="harmful")
    assert a == b  # same seed: same splits, whatever the file order
    assert (len(a.train), len(a.val), len(a.test)) == (10, 5, 8)
    train, val, test = (set(_texts(x)) for x in (a.train, a.val, a.test))
    assert len(train) == 10 and len(val) == 5 and len(test) == 8
    assert not (train & val) and not (train & test) and not (val & test)
    assert train | val | test <= set(_texts(POOL))


def test_different_seeds_and_labels_differ() -> None:
    base = split_prompts(POOL, 10, 5, 8, seed=0, label="harmful")
    assert split_prompts(POOL, 10, 5, 8, seed=1, label="harmful").train != base.train
    assert split_prompts(POOL, 10, 5, 8, seed=0, label="harmless").train != base.train


def test_split_deduplicates() -> None:
    doubled = POOL[:5] + POOL[:5]
    splits = split_prompts(doubled, 2, 1, 2, seed=0, label="x")
    assert len(set(_texts(splits.train + splits.val + splits.test))) == 5
    with pytest.raises(RefusalkitError):
        split_prompts(doubled, 3, 1, 2, seed=0, label="x")


def test_too_few_prompts_names_the_counts() -> None:
    with pytest.raises(RefusalkitError) as info:
        split_prompts(POOL[:7], 4, 2, 3, seed=0, label="harmless")
    message = str(info.value)
    assert "harmless" in message
    assert "7 distinct" in message and "need 9" in message
    assert "4 train + 2 val + 3 test" in message


def test_split_sizes_must_be_positive() -> None:
    with pytest.raises(RefusalkitError, match="--n-val must be at least 1"):
        split_prompts(POOL, 4, 0, 3, seed=0, label="x")


def test_split_manifest_records_every_prompt() -> None:
    splits = split_prompts(POOL, 3, 2, 1, seed=0, label="harmful")
    _, source = builtin_prompts("harmful")
    manifest = split_manifest({"harmful": splits}, {"harmful": source})
    entry = manifest["harmful"]
    assert entry["source"] == "builtin:harmful"
    assert [x["text"] for x in entry["splits"]["train"]] == _texts(splits.train)
    assert entry["splits"]["val"][0]["sha256"] == splits.val[0].sha256
    json.dumps(manifest)  # serialisable


# --- built-in sets ------------------------------------------------------------------------------


def test_builtin_sets() -> None:
    harmful, source = builtin_prompts("harmful")
    harmless, _ = builtin_prompts("harmless")
    harmful_texts = set(_texts(harmful))
    harmless_texts = set(_texts(harmless))
    assert source.name == "builtin:harmful" and source.column == "instruction"
    assert len({p.category for p in harmful if p.category}) >= 8
    assert len(harmful_texts) >= 344
    assert len(harmless_texts) >= 344
    assert not harmful_texts & harmless_texts
    normalised = {t.lower().strip() for t in harmful_texts}
    assert not normalised & {t.lower().strip() for t in harmless_texts}
    # Enough for the paper-sized splits (180 train + 100 val) plus the default 64 test prompts.
    split_prompts(harmful, 180, 100, 64, seed=0, label="harmful")
    split_prompts(harmless, 180, 100, 64, seed=0, label="harmless")


def test_builtin_over_refusal_and_unknown_set() -> None:
    over_refusal, _ = builtin_prompts("over_refusal")
    assert over_refusal and all(p.text for p in over_refusal)
    with pytest.raises(RefusalkitError, match="unknown built-in prompt set"):
        builtin_prompts("nope")


def test_csv_multiline_quoted_field_keeps_its_newline(tmp_path: Path) -> None:
    path = _write(tmp_path, "p.csv", 'prompt,id\n"line one\nline two",1\n"single",2\n')
    prompts, _ = load_prompts(path)
    assert _texts(prompts) == ["line one\nline two", "single"]


def test_jsonl_with_unicode_line_separator_inside_a_string(tmp_path: Path) -> None:
    rows = [{"prompt": "first\u2028part"}, {"prompt": "second"}]
    content = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    path = _write(tmp_path, "p.jsonl", content)
    prompts, _ = load_prompts(path)
    assert _texts(prompts) == ["first\u2028part", "second"]
