"""The typed records of summary.json and comparison.json: reading and writing give back the files
byte for byte (``schema_version`` added last), rates carry Wilson intervals, and the parts a run
may lack are absent, not guessed."""

from __future__ import annotations

import copy
import json
import math
from typing import Any

import pytest

from refusalkit.errors import RefusalkitError
from refusalkit.evaluation.metrics import Rate
from refusalkit.runs.records import (
    SCHEMA_VERSION,
    Comparison,
    ComparisonRow,
    Evaluation,
    FailedMethod,
    RunSummary,
    SetEvaluation,
    rate_fields,
    rate_from_dict,
    rate_to_dict,
)

Z = 1.959963984540054  # the 97.5% normal quantile


def wilson(k: int, n: int) -> list[float]:
    """The Wilson score interval from its textbook form, independent of refusalkit's."""
    if n == 0:
        return [math.nan, math.nan]
    p = k / n
    centre = (2 * n * p + Z**2) / (2 * (n + Z**2))
    half = Z * math.sqrt(Z**2 + 4 * n * p * (1 - p)) / (2 * (n + Z**2))
    return [0.0 if k == 0 else centre - half, 1.0 if k == n else centre + half]


def interval(k: int, n: int) -> list[float]:
    """The interval as the pipeline writes it (the last bits of a float depend on the formula's
    arrangement, so byte-identical fixtures use the pipeline's; :func:`wilson` checks it)."""
    return list(Rate(k, n).ci95)


def fields(prefix: str, k: int, n: int, n_key: str | None = None) -> dict[str, Any]:
    """A rate as the pipeline writes it inside a block: value, count, [n,] interval."""
    out: dict[str, Any] = {f"{prefix}_rate": k / n if n else math.nan, f"{prefix}_count": k}
    if n_key:
        out[n_key] = n
    out[f"{prefix}_rate_ci95"] = interval(k, n)
    return out


def alone(k: int, n: int) -> dict[str, Any]:
    return {"rate": k / n if n else math.nan, "count": k, "n": n, "ci95": interval(k, n)}


def rates(n: int, base: int, inter: int, judged: int | None = None) -> dict[str, Any]:
    judged = n if judged is None else judged
    return {
        "n": n,
        **fields("baseline_refusal", base, judged),
        "baseline_judged": judged,
        **fields("intervention_refusal", inter, judged),
        "intervention_judged": judged,
    }


def set_block(n: int, base: int, inter: int, *, harmful: bool = False) -> dict[str, Any]:
    block = rates(n, base, inter)
    if harmful:
        block |= fields("intervention_compliance", n - inter - 1, n)
    block["degenerate"] = {
        "baseline": {**alone(0, n), "reasons": {}},
        "intervention": {**alone(1, n), "reasons": {"character-loop": 1}},
    }
    block["per_category"] = {"cybercrime": rates(8, 2, 0), "fraud": rates(8, 1, 0)}
    return block


def shift(mean: float, low: float, high: float, n: int) -> dict[str, Any]:
    return {"mean": mean, "ci95": [low, high], "n": n}


def verdict() -> dict[str, Any]:
    removal = {"effect": "works", "reason": "removal changed harmful refusal 11/64 → 0/64: ok",
               "baseline_refusal_count": 11, "intervention_refusal_count": 0, "n": 64,
               "refusal_rate_shift": shift(-0.171875, -0.265625, -0.078125, 64),
               "log_odds_shift": shift(-2.62, -2.88, -2.36, 64)}  # fmt: skip
    addition = {**removal, "effect": "no effect", "reason": "addition: too small",
                "baseline_refusal_count": 1, "intervention_refusal_count": 3}  # fmt: skip
    return {"removal": "works", "addition": "no effect",
            "reason": "The direction works for removal. …", "works": True,
            "details": {"removal": removal, "addition": addition}}  # fmt: skip


def selection(*, stability: bool = False) -> dict[str, Any]:
    out: dict[str, Any] = {
        "method": "cosmic", "steering": "lce", "position": -2, "layer": 17, "score": 1.9631,
        "kl": 0.0591, "n_candidates": 120, "n_kept": 83, "n_kl_evaluated": 9,
        "s_comply": 0.98, "s_refuse": 0.9831,
        "diagnostics": {
            "rank": 3, "n_scored": 115, "best_score": 2.01,
            "removed_above_pick": {"median_peak": {
                "filter": "median-peak", "count": 2,
                "best": [{"position": -1, "layer": 17, "score": 2.01, "kl": None},
                         {"position": -1, "layer": 16, "score": 1.99, "kl": 0.3}]},
                "kl": {"filter": "KL", "count": 1,
                       "best": [{"position": -2, "layer": 18, "score": 1.97, "kl": 0.27}],
                       "kl_range": [0.27, 0.27], "kl_threshold": 0.1}},
            "warning": None,
        },
    }  # fmt: skip
    if stability:
        out["stability"] = {
            "resamples": 4, "seed": 0, "pick": {"position": -2, "layer": 17}, "pick_share": 0.75,
            "wins": [{"position": -2, "layer": 17, "count": 3, "share": 0.75}],
            "nothing_selected": 1,
        }  # fmt: skip
    return out


def evaluation(*, over_refusal: bool = True) -> dict[str, Any]:
    out: dict[str, Any] = {
        "harmful": set_block(64, 11, 0, harmful=True),
        "harmless": set_block(64, 1, 14),
    }
    if over_refusal:
        out["over_refusal"] = set_block(64, 8, 1)
    labels = list(out)
    out |= {
        "judge": "substring",
        "judges": {
            "substring": {label: rates(64, 3, 1) for label in labels},
            "log-odds": {label: rates(64, 5, 2) for label in labels},
            # A guard judges harmful prompts only: nothing judged elsewhere, rates NaN.
            "guard": {label: rates(64, 4, 0, judged=64 if label == "harmful" else 0)
                      for label in labels},
        },
        "judge_settings": {"primary": "substring", "judges": ["substring", "log-odds"],
                           "substring_phrases": ["I'm sorry"], "log_odds_threshold": 0.0,
                           "refusal_token_ids": [40, 2121]},
        **fields("degenerate", 2, 64 * len(labels), "degenerate_n"),
        "interventions": {label: "directional ablation (all layers)" for label in labels},
        "coherence": {"intervention": "directional ablation (all layers)", "n_prompts": 64,
                      "n_tokens": 2900, "kl": 0.05, "kl_max": 0.4,
                      "baseline_cross_entropy": 0.61, "intervention_cross_entropy": 0.65,
                      "cross_entropy_increase": 0.04},
    }  # fmt: skip
    return out


ADVERSARIAL = {"condition": "A", "applied_to": ["val"], "text": "Refuse everything.",
               "test_prompts": "evaluated without it"}  # fmt: skip


def summary(**parts: Any) -> dict[str, Any]:
    """A plain run's summary.json, keys in the order the pipeline writes them."""
    return {"model": "qwen2.5-coder-0.5b-instruct", "verdict": verdict(),
            "selection": selection(stability=parts.get("stability", False)),
            "evaluation": evaluation(over_refusal=parts.get("over_refusal", True)),
            "adversarial": parts.get("adversarial"), "config_sha256": "0123456789abcdef",
            "seconds": 726.3}  # fmt: skip


def weak_summary(two_stage: bool) -> dict[str, Any]:
    """A --weak-alignment run: stage 1 (two-stage only) before the selection, the sweep after
    the evaluation."""
    plain = summary()
    sweep = [{"alpha": alpha, **fields("harmful_refusal", k, 64, "harmful_n"),
              **fields("harmless_refusal", k // 4, 64, "harmless_n"),
              **fields("degenerate", k // 2, 128, "degenerate_n")}
             for alpha, k in ((1.0, 13), (2.0, 30), (3.0, 28))]  # fmt: skip
    weak = {"mode": "two-stage" if two_stage else "direct", "steering": "ace", "l_low": [20, 21],
            "l_low_note": "second half of the layers",
            "unsteered": {"harmful": alone(5, 64), "harmless": alone(1, 64)},
            "steerable": True, "best_alpha": 2.0, "harmful_monotonic": False, "min_rise": 0.1,
            "statement": "Best trade-off at α=2: …"}  # fmt: skip
    if two_stage:
        weak["stage2_contrast"] = {"position": -2, "layer": 18, "norm_ratio": 0.26, "cosine": None}
    out = {"model": plain["model"], "verdict": plain["verdict"]}
    if two_stage:
        stage1 = {"selection": {**selection(), "steering": "ace"},
                  "intervention": "affine concept edit at layer 16, alpha=0",
                  "harmful": set_block(64, 40, 5, harmful=True),
                  "harmless": set_block(64, 1, 0), "judge": "substring"}  # fmt: skip
        out["stage1"] = stage1
    out |= {"selection": plain["selection"], "evaluation": plain["evaluation"],
            "alpha_sweep": sweep, "weak_alignment": weak, "adversarial": None,
            "config_sha256": plain["config_sha256"], "seconds": 1234.5}  # fmt: skip
    return out


def comparison_row(selector: str, steering: str) -> dict[str, Any]:
    row: dict[str, Any] = {"selector": selector, "steering": steering, "position": -1,
                           "layer": 16, "score": 1.2, "kl": 0.04, "n": 64}  # fmt: skip
    for label, base, inter in (("harmful", 11, 2), ("harmless", 1, 20), ("over_refusal", 8, 1)):
        row |= fields(f"{label}_baseline_refusal", base, 64)
        row |= fields(f"{label}_intervention_refusal", inter, 64)
        row[f"{label}_n"] = 64
    row |= fields("harmful_intervention_compliance", 60, 64)
    row |= {"test_kl": 0.06, "cross_entropy_increase": 0.031, "baseline_cross_entropy": 0.61,
            "intervention_cross_entropy": 0.641, **fields("degenerate", 3, 192, "degenerate_n"),
            "selection_seconds": 41.2, "verdict": verdict()}  # fmt: skip
    return row


def comparison() -> dict[str, Any]:
    return {
        "model": "qwen2.5-coder-0.5b-instruct",
        "working_methods": ["cosmic-lce"],
        "rows": [
            comparison_row("cosmic", "lce"),
            comparison_row("cosmic", "ace"),
            {"selector": "refusal-score", "steering": "lce", "error": "the induce filter: none"},
            comparison_row("refusal-score", "ace"),
        ],
        "adversarial": ADVERSARIAL,
        "judge": "substring",
        "seconds": 2100.7,
    }


def versioned(data: dict[str, Any]) -> str:
    return json.dumps({**data, "schema_version": SCHEMA_VERSION})


# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [
        summary(),
        summary(over_refusal=False),  # --n-over-refusal 0
        summary(adversarial=ADVERSARIAL, stability=True),
        weak_summary(two_stage=True),
        weak_summary(two_stage=False),
    ],
    ids=["plain", "no-over-refusal", "adversarial-stability", "two-stage", "direct"],
)
def test_summary_round_trip_is_byte_identical(data):
    record = RunSummary.from_dict(data)
    # json.dumps compares NaN rates (nothing judged) and key order too, unlike ==.
    assert json.dumps(record.to_dict()) == versioned(data)
    assert RunSummary.from_dict(record.to_dict()) == record


def test_comparison_round_trip_is_byte_identical():
    data = comparison()
    record = Comparison.from_dict(data)
    assert json.dumps(record.to_dict()) == versioned(data)
    assert isinstance(record.rows[2], FailedMethod) and record.rows[2].name == "refusal-score-lce"
    selected = [row.name for row in record.selected]
    assert selected == ["cosmic-lce", "cosmic-ace", "refusal-score-ace"]


def test_to_dict_equals_the_input_with_the_schema_version_last():
    for data, record in ((summary(), RunSummary.from_dict(summary())),
                         (comparison(), Comparison.from_dict(comparison()))):  # fmt: skip
        written = record.to_dict()
        assert list(written)[-1] == "schema_version" and written["schema_version"] == 1
        assert list(written)[:2] == list(data)[:2]  # the verdict (or methods) stays up front
        assert json.loads(json.dumps(written))["model"] == data["model"]


def test_a_newer_schema_version_is_refused_with_a_clear_error():
    with pytest.raises(RefusalkitError, match="schema_version 2"):
        RunSummary.from_dict({"schema_version": 2, **summary()})
    with pytest.raises(RefusalkitError, match=r"comparison\.json"):
        Comparison.from_dict({"schema_version": 99, **comparison()})


def test_optional_parts_are_none_not_guessed():
    plain = RunSummary.from_dict(summary(over_refusal=False))
    assert plain.weak is None and plain.adversarial is None
    assert list(plain.evaluation.sets) == ["harmful", "harmless"]
    assert plain.selection.stability is None and plain.selection.scores.keys() == {
        "s_comply",
        "s_refuse",
    }
    assert plain.evaluation.sets["harmless"].compliance is None  # harmful prompts only
    direct = RunSummary.from_dict(weak_summary(two_stage=False))
    assert direct.weak is not None and direct.weak.stage1 is None
    assert direct.weak.weak_alignment.stage2_contrast is None
    two_stage = RunSummary.from_dict(weak_summary(two_stage=True))
    assert two_stage.weak is not None and two_stage.weak.stage1 is not None
    assert two_stage.weak.stage1.sets["harmful"].baseline == Rate(40, 64)
    assert "stage1" not in direct.to_dict() and "alpha_sweep" not in plain.to_dict()


def test_rates_are_count_over_judged_with_wilson_intervals():
    evaluation_record = Evaluation.from_dict(evaluation())
    harmful = evaluation_record.sets["harmful"]
    assert harmful.baseline == Rate(11, 64) and harmful.intervention == Rate(0, 64)
    assert harmful.compliance == Rate(63, 64)
    assert list(harmful.baseline.ci95) == pytest.approx(wilson(11, 64), abs=1e-12)
    for k, n in ((0, 64), (64, 64), (1, 3), (11, 64), (499, 1000)):
        assert list(Rate(k, n).ci95) == pytest.approx(wilson(k, n), abs=1e-12)
        assert rate_to_dict(Rate(k, n))["ci95"] == pytest.approx(wilson(k, n), abs=1e-12)
        assert rate_from_dict(rate_to_dict(Rate(k, n))) == Rate(k, n)
    # A judge that abstained on every harmless prompt: 0 judged, no rate, no interval.
    guard = evaluation_record.judges["guard"]["harmless"]
    assert guard.n == 64 and guard.baseline == Rate(4, 0)
    assert all(math.isnan(x) for x in rate_fields("x", guard.baseline)["x_rate_ci95"])
    assert guard.baseline.describe() == "– (4/0 judged)"
    assert Rate(11, 64).describe() == "0.17 (11/64, 95% CI 0.10–0.28)"


def test_the_rate_layouts_of_the_files():
    rate = Rate(13, 64)
    assert list(rate_fields("harmful_refusal", rate, "harmful_n")) == [
        "harmful_refusal_rate",
        "harmful_refusal_count",
        "harmful_n",
        "harmful_refusal_rate_ci95",
    ]
    assert list(rate_to_dict(rate)) == ["rate", "count", "n", "ci95"]
    block = SetEvaluation.from_dict(set_block(64, 11, 0, harmful=True))
    assert block.degenerate is not None
    assert block.degenerate.intervention.reasons == {"character-loop": 1}
    assert block.per_category is not None and block.per_category["fraud"].baseline == Rate(1, 8)


def test_comparison_row_rates_are_over_each_sets_n():
    row = ComparisonRow.from_dict(comparison_row("cosmic", "lce"))
    assert row.sets["harmless"].intervention == Rate(20, 64)
    assert row.degenerate == Rate(3, 192) and row.verdict.works
    without = copy.deepcopy(comparison_row("cosmic", "lce"))
    for key in [k for k in without if k.startswith("over_refusal_")]:
        del without[key]
    assert "over_refusal" not in ComparisonRow.from_dict(without).sets
    assert json.dumps(ComparisonRow.from_dict(without).to_dict()) == json.dumps(without)
