"""``benchmarks/selection.py`` runs end to end on a tiny random model and reports what it claims."""

from __future__ import annotations

import json

import pytest

from tests.benchmarks import load_benchmark

REQUIRED = (
    "oracle_seconds",
    "fast_seconds",
    "speedup",
    "oracle_prompt_forwards",
    "fast_prompt_forwards",
    "oracle_block_forwards",
    "fast_block_forwards",
    "same_selection",
)


@pytest.fixture(scope="module")
def bench():
    return load_benchmark("selection")


def test_benchmark_agrees_with_the_oracle_on_a_tiny_random_model(bench, tmp_path):
    out = tmp_path / "selection.json"
    report = bench.main(
        ["--random-weights", "--shape", "tiny", "--n-train", "6", "--n-val", "3",
         "--device", "cpu", "--dtype", "float32", "--quiet", "--out", str(out)]
    )  # fmt: skip
    assert json.loads(out.read_text()) == report
    assert report["model"]["random_weights"] and report["model"]["n_layers"] == 6
    assert set(report["results"]) == {"lce", "ace"}
    for result in report["results"].values():
        assert all(key in result for key in REQUIRED)
        assert result["same_selection"] and result["same_l_low"]
        assert result["oracle_pick"] == result["fast_pick"]
        assert result["fast_prompt_forwards"] < result["oracle_prompt_forwards"]
        assert result["fast_work"]["token_blocks"] < result["oracle_work"]["token_blocks"]
    assert report["same_selection"]


def test_forced_l_low_and_variants(bench):
    report = bench.main(
        ["--random-weights", "--shape", "tiny", "--n-train", "4", "--n-val", "2",
         "--steering", "ace", "--l-low-layers", "2,3", "--variants", "--quiet"]
    )  # fmt: skip
    (result,) = report["results"].values()
    assert result["l_low"] == [2, 3] and result["oracle_l_low_seconds"] < 0.01
    assert set(result["variants"]) == set(bench.VARIANTS)
    assert all(v["same_selection"] for v in result["variants"].values())


def test_generation_benchmark_reports_throughput(tmp_path):
    report = load_benchmark("generation").main(
        ["--random-weights", "--shape", "tiny", "--n-prompts", "4", "--batch-size", "4",
         "--max-new-tokens", "3", "--quiet", "--device", "cpu"]
    )  # fmt: skip
    assert set(report["results"]) == {"baseline", "ablation", "addition", "ace"}
    for row in report["results"].values():
        assert row["tokens"] > 0 and row["tokens_per_second"] > 0
        assert row["decode_steps"] >= row["tokens"]
