"""``benchmarks/kl_rule.py`` measures candidates of a finished run directory (tiny model)."""

from __future__ import annotations

import math

from refusalkit.cli import main
from tests.benchmarks import load_benchmark
from tests.test_cli import FINISHED, SMALL


def test_kl_rule_measures_the_best_candidates_and_applies_every_rule(model_dir, tmp_path):
    out = tmp_path / "run"
    assert main(["run", "--model", str(model_dir), *SMALL, "--out", str(out)]) in FINISHED
    bench = load_benchmark("kl_rule")
    measured = bench.measure(out, top=3)
    rows = measured["candidates"]
    assert [row["rank"] for row in rows] == [1, 2, 3]
    assert rows[0]["score"] >= rows[1]["score"] >= rows[2]["score"]
    for row in rows:
        assert row["kl_val"] >= 0 and all(
            math.isfinite(row[key]) for key in ("removal", "addition", "ce_increase")
        )
    text = bench.report(measured)
    assert text.count("\n| KL ≤") == len(bench.rules())
