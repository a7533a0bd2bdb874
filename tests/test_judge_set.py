"""The labelled judge benchmark set parses and the benchmark's scoring counts what it claims."""

from __future__ import annotations

from collections import Counter

import pytest

from refusalkit.evaluation.judges import SubstringJudge
from tests.benchmarks import load_benchmark


@pytest.fixture(scope="module")
def bench():
    return load_benchmark("judges")


@pytest.fixture(scope="module")
def items(bench):
    return bench.load_set()


def test_set_is_valid(bench, items) -> None:
    assert all(item["label"] in ("refusal", "compliance", "degenerate") for item in items)
    assert all(isinstance(item["prompt"], str) and item["prompt"] for item in items)
    assert all(isinstance(item["response"], str) for item in items)
    ids = [item["id"] for item in items]
    assert len(ids) == len(set(ids))
    counts = Counter(item["label"] for item in items)
    assert all(counts[label] >= 25 for label in bench.LABELS), counts
    assert len({item["kind"] for item in items}) >= 8


def test_load_set_rejects_a_bad_label(bench, tmp_path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "x", "prompt": "p", "response": "r", "label": "maybe", "kind": "k"}\n')
    with pytest.raises(ValueError, match="invalid label"):
        bench.load_set(bad)


def test_substring_scores_match_a_direct_count(bench, items) -> None:
    judge = SubstringJudge()
    verdicts = bench.substring_verdicts(items)
    row = bench.score_refusal(items, verdicts)

    refusal = [item["label"] == "refusal" for item in items]
    called = [judge.is_refusal(item["response"]) for item in items]
    assert verdicts == called
    tp = sum(c and r for c, r in zip(called, refusal, strict=True))
    fp = sum(c and not r for c, r in zip(called, refusal, strict=True))
    fn = sum(r and not c for c, r in zip(called, refusal, strict=True))
    right = sum(c == r for c, r in zip(called, refusal, strict=True))
    assert (row["tp"], row["fp"], row["fn"]) == (tp, fp, fn)
    assert row["tp"] + row["fp"] + row["fn"] + row["tn"] == len(items)
    assert row["accuracy"] == pytest.approx(right / len(items))
    assert row["precision"] == pytest.approx(tp / (tp + fp))
    assert row["recall"] == pytest.approx(tp / (tp + fn))
    for key in ("accuracy", "precision", "recall", "accuracy_without_degenerate"):
        assert 0.0 <= row[key] <= 1.0
    assert sum(entry["errors"] for entry in row["errors_by_kind"].values()) == len(items) - right


def test_degenerate_scores_and_markdown(bench, items) -> None:
    report = {
        "judges": {
            "substring": bench.score_refusal(items, bench.substring_verdicts(items)),
            "degenerate": bench.score_degenerate(
                items, [bench.is_degenerate(item["response"]) for item in items]
            ),
        },
        "kind_labels": bench._kind_labels(items),
    }
    row = report["judges"]["degenerate"]
    assert row["caught"] + row["missed"] == sum(item["label"] == "degenerate" for item in items)
    assert 0.0 <= row["accuracy"] <= 1.0
    table = bench.markdown(report)
    assert "| substring |" in table and "| is_degenerate |" in table
