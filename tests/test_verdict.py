"""The effect verdict (did the direction do what it is for?) and the selection diagnostics (why
the pick is the pick), on hand-made numbers whose answers are known; and the CLI's exit status,
which must follow the verdict."""

from __future__ import annotations

import json
import math

import pytest
import torch

from refusalkit.activations import encode_batches
from refusalkit.directions import compute_candidates
from refusalkit.evaluation.verdict import (
    EXIT_NO_WORKING_DIRECTION,
    effect_verdict,
    judge_run,
    paired_shift,
)
from refusalkit.prompts.chat import build_chat_format
from refusalkit.prompts.datasets import builtin_prompts
from refusalkit.selection.diagnostics import selection_diagnostics
from refusalkit.selection.stability import per_prompt_activations, resample_candidates
from tests.test_cli import FINISHED, SMALL, _run
from tests.tiny import make_adapter


def test_paired_shift_brackets_the_mean_and_is_reproducible():
    before = [0.0] * 50 + [1.0] * 14
    after = [0.0] * 64
    shift = paired_shift(before, after)
    assert shift.mean == pytest.approx(-14 / 64)
    assert shift.low < shift.mean < shift.high < 0 and shift.sign == -1
    assert paired_shift(before, after) == shift  # seeded
    assert paired_shift([1.0, 0.0], [1.0, 0.0]).sign == 0


def _verdict(kind, before, after, shift=0.0, n=64):
    """``before``/``after`` judged refusals out of ``n``; log-odds moved by ``shift`` per prompt
    (with a little spread, as real ones have)."""
    refused_before = [i < before for i in range(n)]
    refused_after = [i < after for i in range(n)]
    lo_before = [math.sin(i) for i in range(n)]
    lo_after = [x + shift + 0.1 * math.cos(3 * i) for i, x in enumerate(lo_before)]
    return effect_verdict(kind, refused_before, refused_after, lo_before, lo_after)


@pytest.mark.parametrize(
    ("kind", "before", "after", "shift", "effect", "why"),
    [
        ("removal", 11, 0, -3.0, "works", "did what it is for"),
        ("removal", 16, 21, 1.0, "backfires", "wrong way"),  # issue 12's unseen-prompts pick
        ("removal", 16, 16, 0.0, "no effect", "neither"),
        ("removal", 20, 15, -0.5, "no effect", "too small"),  # significant, but 75% remain
        ("removal", 0, 0, -2.0, "no effect", "nothing to remove"),
        ("removal", 10, 0, 2.0, "no effect", "opposite directions"),
        ("addition", 1, 14, 2.0, "works", "did what it is for"),
        ("addition", 0, 0, 0.0, "no effect", "neither"),  # issue 12: 0/64 induced
        ("addition", 1, 4, 1.0, "no effect", "too small"),
        ("addition", 10, 2, -1.0, "backfires", "wrong way"),
    ],
)
def test_effect_verdicts(kind, before, after, shift, effect, why):
    verdict = _verdict(kind, before, after, shift)
    assert verdict.effect == effect, verdict.reason
    assert why in verdict.reason and f"{before}/64 → {after}/64" in verdict.reason


def _rows(test_set, before, after, shift, n=16):
    rows = []
    for i in range(n):
        prompt = f"{test_set} prompt {i}"
        base = {"set": test_set, "prompt": prompt, "refusal_log_odds": 0.1 * i}
        rows.append({**base, "condition": "baseline", "refusal": i < before})
        rows.append({**base, "condition": "intervention", "refusal": i < after,
                     "refusal_log_odds": 0.1 * i + shift})  # fmt: skip
    return rows


def test_run_verdict_reads_completion_rows_and_says_failure_first():
    works = judge_run(_rows("harmful", 8, 0, -2.0) + _rows("harmless", 0, 8, 2.0)).to_dict()
    assert works["removal"] == works["addition"] == "works" and works["works"]
    assert works["reason"].startswith("The direction works for removal and addition.")
    assert works["details"]["removal"]["baseline_refusal_count"] == 8
    useless = judge_run(_rows("harmful", 8, 10, 0.5) + _rows("harmless", 0, 0, 0.0)).to_dict()
    assert useless["removal"] == "backfires" and useless["addition"] == "no effect"
    assert not useless["works"] and useless["reason"].startswith("No working direction")
    # Unjudged rows (a model judge that abstained) and sweep rows are not paired.
    sweep = {"set": "harmful", "condition": "alpha_sweep", "prompt": "harmful prompt 0",
             "refusal": True, "refusal_log_odds": 9.0}  # fmt: skip
    rows = [*_rows("harmful", 8, 0, -2.0), sweep]
    assert judge_run(rows).to_dict()["details"]["removal"]["n"] == 16


def _record(statuses_scores_kls, pick):
    candidates = [
        {"position": -1, "layer": layer, "score": score, "kl": kl, "status": status}
        for layer, (status, score, kl) in enumerate(statuses_scores_kls)
    ]
    position, layer = pick
    return {"position": position, "layer": layer, "score": candidates[layer]["score"],
            "candidates": candidates}  # fmt: skip


def test_diagnostics_name_what_the_filters_removed_above_the_pick():
    rows = [("kl", 1.96, 0.27), ("kl", 1.95, 0.13), ("layer", 1.97, math.nan),
            ("kl", 1.94, 0.2), ("selected", 1.93, 0.02), ("not_needed", 1.5, math.nan),
            ("zero", math.nan, math.nan)]  # fmt: skip
    found = selection_diagnostics(_record(rows, (-1, 4)), score_key="score",
                                  higher_is_better=True, kl_threshold=0.1)  # fmt: skip
    assert found["rank"] == 5 and found["n_scored"] == 6 and found["best_score"] == 1.97
    kl = found["removed_above_pick"]["kl"]
    assert kl["count"] == 3 and kl["kl_range"] == [0.13, 0.27] and kl["kl_threshold"] == 0.1
    assert [c["layer"] for c in kl["best"]] == [0, 1, 3]  # best first
    assert found["removed_above_pick"]["layer"]["count"] == 1
    assert "ranks 5 of 6" in found["warning"] and "KL 0.130–0.270 > 0.1" in found["warning"]
    # The best candidate picked: rank 1, nothing removed above it, no warning.
    best_record = _record([rows[0], ("selected", 2.0, 0.0)], (-1, 1))
    best = selection_diagnostics(best_record, score_key="score", higher_is_better=True,
                                 kl_threshold=0.1)  # fmt: skip
    assert best["rank"] == 1 and best["removed_above_pick"] == {} and best["warning"] is None


def test_diagnostics_of_an_output_based_pick_rank_lower_scores_first():
    record = {"position": -1, "layer": 1, "score": -2.0, "candidates": [
        {"position": -1, "layer": 0, "bypass": -3.0, "kl": 0.5, "status": "kl"},
        {"position": -1, "layer": 1, "bypass": -2.0, "kl": 0.05, "status": "selected"},
    ]}  # fmt: skip
    found = selection_diagnostics(record, score_key="bypass", higher_is_better=False,
                                  kl_threshold=0.1)  # fmt: skip
    assert found["rank"] == 2 and found["removed_above_pick"]["kl"]["count"] == 1


def test_exit_status_follows_the_verdict(model_dir, tmp_path, capsys):
    out = tmp_path / "run"
    code, stdout, err = _run(capsys, "run", "--model", str(model_dir), *SMALL, "--out", str(out))
    summary = json.loads((out / "summary.json").read_text())
    verdict = summary["verdict"]
    assert list(summary)[:2] == ["model", "verdict"]  # said first
    assert code == (0 if verdict["works"] else EXIT_NO_WORKING_DIRECTION), err
    last = stdout.strip().splitlines()
    assert last[-2].startswith("VERDICT: removal ") and last[-1].strip() == verdict["reason"]
    assert ("NO WORKING DIRECTION" in last[-2]) == (not verdict["works"])
    assert "Verdict" in (out / "report.md").read_text().split("\n")[2]
    html = (out / "report.html").read_text()
    assert 'id="verdict"' in html and html.index('id="verdict"') < html.index("<dl")
    assert summary["selection"]["diagnostics"]["rank"] >= 1


@pytest.fixture(scope="module")
def qwen_adapter():
    return make_adapter("qwen2", n_layers=4)


def test_per_prompt_activations_average_to_the_runs_candidates(qwen_adapter):
    """The stability resamples start from per-prompt readings; their plain mean must be the
    candidates the run computes (same positions, layers, float64 means)."""
    chat = build_chat_format(qwen_adapter.tokenizer)
    harmful = encode_batches(chat, builtin_prompts("harmful")[0][:7], 3, qwen_adapter.device)
    harmless = encode_batches(chat, builtin_prompts("harmless")[0][:5], 2, qwen_adapter.device)
    positions = chat.n_post_instruction
    expected = compute_candidates(qwen_adapter, harmful, harmless, positions)
    rows_harmful = per_prompt_activations(qwen_adapter, harmful, positions, "h")
    rows_harmless = per_prompt_activations(qwen_adapter, harmless, positions, "b")
    assert rows_harmful.shape == (7, positions, qwen_adapter.n_layers, qwen_adapter.hidden_size)
    torch.testing.assert_close(rows_harmful.double().mean(0), expected.harmful_means,
                               rtol=1e-6, atol=1e-6)  # fmt: skip
    torch.testing.assert_close(rows_harmless.double().mean(0), expected.harmless_means,
                               rtol=1e-6, atol=1e-6)  # fmt: skip
    # A resample is a multiset of the prompts: seeded, and its means are means of real rows.
    first = resample_candidates(
        rows_harmful, rows_harmless, torch.Generator().manual_seed(1), qwen_adapter.n_layers
    )
    again = resample_candidates(
        rows_harmful, rows_harmless, torch.Generator().manual_seed(1), qwen_adapter.n_layers
    )
    torch.testing.assert_close(first.harmful_means, again.harmful_means)
    assert not torch.equal(first.harmful_means, expected.harmful_means)


def test_stability_counts_every_resample(model_dir, tmp_path, capsys):
    out = tmp_path / "run"
    code, _, err = _run(capsys, "run", "--model", str(model_dir), *SMALL, "--stability", "3",
                        "--out", str(out))  # fmt: skip
    assert code in FINISHED, err
    stability = json.loads((out / "stability.json").read_text())
    assert stability["resamples"] == 3
    assert sum(w["count"] for w in stability["wins"]) + stability["nothing_selected"] == 3
    summary = json.loads((out / "summary.json").read_text())
    pick = (summary["selection"]["position"], summary["selection"]["layer"])
    won = {(w["position"], w["layer"]): w["count"] for w in stability["wins"]}
    assert stability["pick_share"] == won.get(pick, 0) / 3
    assert summary["selection"]["stability"]["pick_share"] == stability["pick_share"]
    assert "Pick stability" in (out / "report.md").read_text()
    other = tmp_path / "other"
    code, _, err = _run(capsys, "run", "--model", str(model_dir), *SMALL, "--stability", "2",
                        "--selector", "refusal-score", "--out", str(other))  # fmt: skip
    assert code == 2 and "--stability re-runs COSMIC selection" in err
