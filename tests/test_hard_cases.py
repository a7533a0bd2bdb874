"""SPEC §5's hard cases on tiny models: the adversarial system prompt (conditions A and B) and
weakly aligned models (two-stage and direct, with the α sweep); the sweep's verdict as pure math."""

from __future__ import annotations

import json
import math

import pytest
import torch

from refusalkit.activations import encode_batches
from refusalkit.config import RunConfig
from refusalkit.directions import CandidateSet, compute_candidates, contrast_retained
from refusalkit.evaluation.generation import generate
from refusalkit.evaluation.metrics import Rate
from refusalkit.evaluation.suite import run_condition
from refusalkit.evaluation.sweep import SweepPoint, assess
from refusalkit.interventions import AffineEdit, addition, applied
from refusalkit.models.loading import load_resolved
from refusalkit.prompts.chat import ADVERSARIAL_SYSTEM_PROMPT, SystemPrompt, build_chat_format
from refusalkit.prompts.datasets import Prompt, builtin_prompts, split_prompts
from refusalkit.selection.cosmic import (
    CosmicSettings,
    EvaluationLayers,
    low_similarity_layers,
    select,
)
from refusalkit.selection.engine import CosmicEngine
from refusalkit.workflows import evaluate as evaluate_workflow
from refusalkit.workflows import weak_alignment as weak_workflow
from refusalkit.workflows.inputs import adversarial_record, split_batches, split_chat
from tests.oracle import cosmic_oracle_pick, cosmic_oracle_scores
from tests.test_cli import FINISHED, SMALL, _run
from tests.tiny import make_adapter


def _succeeds(capsys, model_dir, out, command: str, *options: str) -> str:
    """A CLI command on the tiny model with small settings and no over-refusal set; its stdout."""
    code, stdout, err = _run(
        capsys, command, "--model", str(model_dir), *SMALL, "--n-over-refusal", "0", *options,
        "--out", str(out),
    )  # fmt: skip
    assert code in FINISHED, err
    return stdout


# -- the α sweep's verdict -------------------------------------------------------------------


def _point(alpha: float, harmful: int, harmless: int, degenerate: int = 0, n: int = 64):
    return SweepPoint(alpha, Rate(harmful, n), Rate(harmless, n), Rate(degenerate, 2 * n))


def test_best_alpha_is_the_best_trade_off_and_non_monotonic_curves_are_reported():
    points = [_point(1, 20, 2), _point(2, 40, 8), _point(3, 30, 30, degenerate=40)]
    verdict = assess(Rate(5, 64), Rate(1, 64), points, "ACE addition")
    assert verdict.steerable and verdict.best_alpha == 2  # 40−8 beats 20−2 and 30−30
    assert not verdict.harmful_monotonic  # 20 → 40 → 30, kept as measured
    assert "α=2" in verdict.statement and "not monotonic" in verdict.statement


def test_no_refusal_behaviour_gives_a_plain_statement_and_no_best_alpha():
    # A model that was never taught to refuse: steering makes gibberish, not refusals.
    points = [_point(1, 0, 0), _point(2, 1, 0, degenerate=30), _point(3, 0, 0, degenerate=120)]
    verdict = assess(Rate(0, 64), Rate(0, 64), points, "ACE addition at layer 9")
    assert not verdict.steerable and verdict.best_alpha is None
    assert verdict.statement.startswith("No refusal behaviour to steer")
    assert "ACE addition at layer 9" in verdict.statement and "α = 1, 2, 3" in verdict.statement
    assert "No best α" in verdict.statement


def test_the_lead_of_a_no_steering_statement_is_the_callers():
    points = [_point(1, 5, 1)]
    verdict = assess(Rate(5, 64), Rate(1, 64), points, "x", lead="Stage 2 did not steer")
    assert verdict.statement.startswith("Stage 2 did not steer: x with α = 1")


def test_contrast_retained_measures_what_an_edit_left_of_a_candidate():
    torch.manual_seed(0)
    harmless = torch.randn(2, 3, 4, dtype=torch.float64)
    shift = torch.tensor([3.0, 4.0, 0.0, 0.0], dtype=torch.float64)
    original = CandidateSet(harmless + shift, harmless)
    # An edit that halves the difference along it and adds an orthogonal part of the same size.
    edited_shift = torch.tensor([1.5, 2.0, 2.5, 0.0], dtype=torch.float64)
    edited = CandidateSet(harmless + edited_shift, harmless)
    found = contrast_retained(original, edited, -1, 2)
    assert found["position"] == -1 and found["layer"] == 2
    assert found["norm_ratio"] == pytest.approx(math.sqrt(12.5) / 5)
    assert found["cosine"] == pytest.approx(12.5 / (5 * math.sqrt(12.5)))
    # An exact removal leaves no difference: the ratio is 0 and the angle undefined.
    removed = contrast_retained(original, CandidateSet(harmless, harmless), -2, 0)
    assert removed["norm_ratio"] == 0.0 and removed["cosine"] is None


def test_a_rise_within_noise_does_not_count_as_steering():
    # +10 points on 20 prompts: the Wilson lower bound (0.06) stays below the unsteered 0.10.
    points = [_point(1, 4, 0, n=20)]
    assert not assess(Rate(2, 20), Rate(0, 20), points, "x").steerable
    # The same +10 points on 1000 prompts is real.
    points = [_point(1, 200, 0, n=1000)]
    assert assess(Rate(100, 1000), Rate(0, 1000), points, "x").steerable


def test_sweep_point_dictionary_has_the_public_keys():
    row = _point(2.0, 16, 3).as_dict()
    assert {"alpha", "harmful_refusal_rate", "harmless_refusal_rate", "degenerate_rate"} <= set(row)
    assert row["alpha"] == 2.0 and row["harmful_refusal_rate"] == 16 / 64
    assert row["degenerate_n"] == 128 and len(row["harmful_refusal_rate_ci95"]) == 2


# -- the adversarial system prompt -------------------------------------------------------------


@pytest.fixture(scope="module")
def qwen():
    adapter = make_adapter("qwen2", n_layers=6)
    return adapter, build_chat_format(adapter.tokenizer)


@pytest.mark.parametrize(
    ("condition", "with_prompt"),
    [("none", set()), ("val", {"val"}), ("train+val", {"train", "val"})],
)
def test_the_adversarial_prompt_reaches_exactly_its_splits(qwen, condition, with_prompt):
    adapter, chat = qwen
    config = RunConfig(adversarial_prompt=condition)
    prompts = split_prompts(builtin_prompts("harmful")[0], 2, 2, 2, seed=0, label="harmful")
    for split in ("train", "val", "test"):
        batch = split_batches(config, chat, adapter, prompts, split)[0]
        text = adapter.tokenizer.decode(batch.input_ids[0])
        assert (ADVERSARIAL_SYSTEM_PROMPT in text) == (split in with_prompt), split
        # The post-instruction tokens (the candidate positions) are the same either way.
        assert split_chat(config, chat, split).suffix_ids == chat.suffix_ids
    record = adversarial_record(config)
    if condition == "none":
        assert record is None
    else:
        assert record is not None and record.applied_to == sorted(with_prompt)
        assert record.condition == ("A" if condition == "val" else "B")


def test_adversarial_runs_record_the_condition_and_condition_b_changes_the_candidates(
    model_dir, tmp_path, capsys
):
    directions = {}
    for condition in ("none", "val", "train+val"):
        out = tmp_path / condition.replace("+", "-")
        _succeeds(capsys, model_dir, out, "run", "--adversarial-prompt", condition)
        summary = json.loads((out / "summary.json").read_text())
        expected = {"none": None, "val": "A", "train+val": "B"}[condition]
        assert (summary["adversarial"] or {}).get("condition") == expected
        directions[condition] = CandidateSet.load(out / "candidates.safetensors").directions
        # Test prompts are rendered without the adversarial prompt: their baseline completions
        # are those of the run without it.
        rows = [json.loads(x) for x in (out / "completions.jsonl").read_text().splitlines()]
        baseline = [r["completion"] for r in rows if r["condition"] == "baseline"]
        if condition == "none":
            reference = baseline
        assert baseline == reference
    assert torch.equal(directions["none"], directions["val"])  # A: train prompts untouched
    assert not torch.allclose(directions["none"], directions["train+val"])  # B: changed


def test_compare_accepts_the_adversarial_prompt(model_dir, tmp_path, capsys):
    out = tmp_path / "compare"
    stdout = _succeeds(
        capsys, model_dir, out, "compare", "--induce-threshold", "-1000",
        "--adversarial-prompt", "val",
    )  # fmt: skip
    comparison = json.loads((out / "comparison.json").read_text())
    assert comparison["adversarial"]["condition"] == "A"
    assert len(comparison["rows"]) == 4
    assert "condition A" in stdout


# -- weak alignment ----------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["two-stage", "direct"])
def test_weak_alignment_run_sweeps_alpha_and_states_its_finding(model_dir, tmp_path, capsys, mode):
    out = tmp_path / mode
    stdout = _succeeds(capsys, model_dir, out, "run", "--weak-alignment", mode, "--alphas", "0.5,2")
    summary = json.loads((out / "summary.json").read_text())
    sweep = summary["alpha_sweep"]
    assert [point["alpha"] for point in sweep] == [0.5, 2.0]
    rows = [json.loads(x) for x in (out / "completions.jsonl").read_text().splitlines()]
    for point in sweep:
        for key in ("harmful_refusal_rate", "harmless_refusal_rate", "degenerate_rate"):
            assert isinstance(point[key], float) and 0.0 <= point[key] <= 1.0
        at_alpha = [r for r in rows if r.get("alpha") == point["alpha"]]
        harmful = [r for r in at_alpha if r["set"] == "harmful"]
        assert len(harmful) == 3 and point["harmful_refusal_count"] == sum(
            r["refusal"] for r in harmful
        )
        assert point["degenerate_count"] == sum(r["degenerate"] for r in at_alpha)
    weak = summary["weak_alignment"]
    assert weak["mode"] == mode and weak["steering"] == "ace"
    assert weak["statement"] and weak["statement"] in stdout
    # A tiny random model has no refusal behaviour: the verdict must say so, with no best α.
    assert weak["steerable"] is False and weak["best_alpha"] is None
    assert summary["selection"]["steering"] == "ace"
    assert all(layer >= 5 // 2 for layer in weak["l_low"])  # second half of the 5 layers
    assert (out / "report.html").is_file()
    assert "ACE addition sweep" in (out / "report.md").read_text()
    if mode == "two-stage":
        stage1 = summary["stage1"]
        assert (out / "stage1-selection.json").is_file()
        assert (out / "candidates-stage2.safetensors").is_file()
        # Stage 2 never steers before the stage-1 layer (stage 1 would project it out there), and
        # reads L_low where its candidates act.
        assert summary["selection"]["layer"] >= stage1["selection"]["layer"]
        assert min(weak["l_low"]) >= stage1["selection"]["layer"]
        # What stage 1 left of the contrast at the stage-2 pick is measured and explains the
        # finding.
        contrast = weak["stage2_contrast"]
        assert (contrast["position"], contrast["layer"]) == (
            summary["selection"]["position"],
            summary["selection"]["layer"],
        )
        assert contrast["norm_ratio"] >= 0.0
        assert weak["statement"].startswith("Stage 2 did not steer refusal back")
        assert "of the original model's norm" in weak["statement"]
        # Stage 1's "after" rates are the steered model's unsteered (baseline) rates.
        for label in ("harmful", "harmless"):
            assert (
                stage1[label]["intervention_refusal_count"]
                == summary["evaluation"][label]["baseline_refusal_count"]
            )
    else:
        assert "stage1" not in summary and not (out / "stage1-selection.json").exists()
        assert weak["statement"].startswith("No refusal behaviour to steer")
        assert "stage2_contrast" not in weak


def test_the_sweep_reuses_the_evaluations_alpha_one_completions_as_generated_afresh(
    model_dir, tmp_path, capsys, monkeypatch
):
    harmless_runs = []

    def counting(adapter, chat, label, *args, **kwargs):
        if label == "harmless":
            harmless_runs.append(label)
        return run_condition(adapter, chat, label, *args, **kwargs)

    monkeypatch.setattr(evaluate_workflow, "run_condition", counting)
    monkeypatch.setattr(weak_workflow, "run_condition", counting)
    out = tmp_path / "reuse"
    _succeeds(capsys, model_dir, out, "run", "--weak-alignment", "direct", "--alphas", "1,2")
    # Harmless prompts were generated baseline, evaluation (ACE α=1) and α=2 only.
    assert len(harmless_runs) == 3
    rows = [json.loads(x) for x in (out / "completions.jsonl").read_text().splitlines()]
    swept = [r for r in rows if r.get("alpha") == 1.0 and r["set"] == "harmless"]
    evaluated = [r for r in rows if r["condition"] == "intervention" and r["set"] == "harmless"]
    assert [r["completion"] for r in swept] == [r["completion"] for r in evaluated]
    # Oracle: ACE addition at α=1 of the selected direction, generated again from scratch with the
    # run's settings (SMALL: 3 new tokens; default batch size 32).
    selection = json.loads((out / "selection.json").read_text())
    adapter, _ = load_resolved(str(model_dir), device="cpu", dtype="float32")
    steer = addition(
        CandidateSet.load(out / "candidates.safetensors"), "ace",
        selection["position"], selection["layer"], 1.0,
    )  # fmt: skip
    fresh = generate(
        adapter, build_chat_format(adapter.tokenizer, SystemPrompt.parse("none")),
        [Prompt(r["prompt"]) for r in swept],
        intervention=steer, max_new_tokens=3, batch_size=32,
    )  # fmt: skip
    assert [c.text for c in fresh] == [r["completion"] for r in swept]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--weak-alignment", "direct", "--selector", "refusal-score"], "COSMIC"),
        (["--weak-alignment", "direct", "--alphas", "1,x"], "comma-separated numbers"),
        (["--adversarial-prompt", "train"], "invalid choice"),
        (["--adversarial-prompt", "val", "--adversarial-text", " "], "empty system prompt"),
    ],
)
def test_bad_hard_case_options_are_one_line_errors(model_dir, tmp_path, capsys, extra, message):
    out = tmp_path / "bad"
    code, _, err = _run(capsys, "run", "--model", str(model_dir), *SMALL, *extra,
                        "--out", str(out))  # fmt: skip
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1
    assert not out.exists()


def test_engine_under_a_stage1_edit_matches_the_oracle_under_the_same_edit():
    """Stage 2 selects with the stage-1 ACE edit hooked in; the engine's cached clean block inputs
    and its start-layer shortcut must compose with that hook exactly as full forwards do."""
    adapter = make_adapter("qwen2", n_layers=6)
    chat = build_chat_format(adapter.tokenizer)
    h = split_prompts(builtin_prompts("harmful")[0], 10, 6, 1, seed=5, label="harmful")
    b = split_prompts(builtin_prompts("harmless")[0], 10, 6, 1, seed=5, label="harmless")

    def batches(prompts):
        return encode_batches(chat, prompts, 4, adapter.device)

    first = compute_candidates(adapter, batches(h.train), batches(b.train), chat.n_post_instruction)
    stage1 = AffineEdit(first.direction(-1, 2), first.reference(-1, 2), 2, alpha=0.0)
    with applied(adapter, stage1):
        candidates = compute_candidates(
            adapter, batches(h.train), batches(b.train), chat.n_post_instruction
        )
        l_low = (3, 4)
        oracle = cosmic_oracle_scores(
            adapter, candidates, l_low, batches(h.val), batches(b.val), steering="ace"
        )
        layers = EvaluationLayers(l_low, tuple(0.0 for _ in range(6)), "test")
        engine = CosmicEngine(
            adapter, candidates, layers, CosmicSettings(steering="ace", kl_threshold=1e9),
            batches(h.val), batches(b.val),
        )  # fmt: skip
        outcome = engine.run()
    assert (outcome.selected.position, outcome.selected.layer) == cosmic_oracle_pick(
        oracle, kl_threshold=1e9
    )
    for record in outcome.records:
        if math.isnan(record.s_comply):
            continue
        p, l = record.position, record.layer
        assert record.s_comply == pytest.approx(float(oracle.s_comply[p, l]), abs=1e-6)
        assert record.s_refuse == pytest.approx(float(oracle.s_refuse[p, l]), abs=1e-6)


def test_min_layer_drops_earlier_candidates_with_the_layer_filter():
    s_comply = torch.tensor([[0.1, 0.9, 0.5, 0.4, 0.3, 0.2]], dtype=torch.float64)
    s_refuse = torch.tensor([[0.1, 0.9, 0.5, 0.4, 0.3, 0.2]], dtype=torch.float64)
    outcome = select(s_comply, s_refuse, CosmicSettings(min_layer=2), lambda p, l: 0.0)
    assert outcome.selected.layer == 2  # layer 1 scores best but lies before min_layer
    assert [r.status for r in outcome.records[:2]] == ["layer", "layer"]


def test_l_low_starts_where_the_kept_candidates_act():
    # 8 layers; the least similar are 1 and 3, but candidates start at layer 5.
    harmful = torch.eye(8, 4, dtype=torch.float64) + 1.0
    harmless = torch.ones(8, 4, dtype=torch.float64)
    harmful[1] = -harmless[1]
    harmful[3] = -harmless[3]
    settings = CosmicSettings(l_low_fraction=0.25, l_low_second_half=True, min_layer=5)
    layers = low_similarity_layers(harmful, harmless, settings)
    assert layers.layers and min(layers.layers) >= 5 and "from layer 5 on" in layers.note
