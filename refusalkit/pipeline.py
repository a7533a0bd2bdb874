"""The end-to-end run: prompts → candidates → selection (COSMIC by default) → evaluation → run
directory; and ``compare``, which runs four selection methods on the same candidates.

Stages write their artifacts as they finish. ``summary.json`` is written last, so a directory
without it is an unfinished run; ``status.json`` says which stage it reached and why it stopped.
Re-running the same command on an unfinished directory resumes from the finished stages; a
finished or differently configured directory is only replaced with ``force``.
"""

from __future__ import annotations

import hashlib
import math
import platform
import random
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch

from refusalkit import __version__
from refusalkit.activations import EncodedBatch, encode_batches
from refusalkit.api import Direction, run_cosmic
from refusalkit.config import (
    ADVERSARIAL_CONDITIONS,
    WEAK_ALIGNMENT_MODES,
    RunConfig,
    check_numbers,
)
from refusalkit.directions import CandidateSet, compute_candidates, contrast_retained
from refusalkit.errors import RefusalkitError
from refusalkit.evaluation.judges import SubstringJudge, load_model_judge, read_phrase_file
from refusalkit.evaluation.metrics import Rate
from refusalkit.evaluation.suite import (
    TEST_SETS,
    ConditionRun,
    EvaluationSettings,
    JudgePanel,
    coherence,
    run_condition,
    summarise,
)
from refusalkit.evaluation.sweep import (
    NO_REFUSAL_LEAD,
    STAGE2_NO_REFUSAL_LEAD,
    SweepPoint,
    assess,
    sweep_point,
)
from refusalkit.evaluation.verdict import run_verdict
from refusalkit.interventions import AffineEdit, addition, applied, removal
from refusalkit.io import (
    read_json,
    read_jsonl,
    write_json,
    write_jsonl,
    write_text,
)
from refusalkit.models.adapter import ArchitectureOverride, ModelAdapter
from refusalkit.models.loading import (
    ResolvedModel,
    context_length,
    load_resolved,
    load_tokenizer,
    resolve_model_path,
)
from refusalkit.models.registry import EMBEDDED_MODELS
from refusalkit.prompts.budget import check_token_budget
from refusalkit.prompts.chat import ChatFormat, SystemPrompt, build_chat_format
from refusalkit.prompts.datasets import (
    Prompt,
    PromptSource,
    Splits,
    builtin_prompts,
    load_prompts,
    remove_overlap,
    split_manifest,
    split_prompts,
)
from refusalkit.report.html import write_html_report
from refusalkit.report.markdown import render_comparison, render_report
from refusalkit.runs import RunDirectory, check_output_path
from refusalkit.selection.cosmic import CosmicSettings
from refusalkit.selection.diagnostics import selection_diagnostics
from refusalkit.selection.engine import RefusalScoreEngine, WorkCounter
from refusalkit.selection.filters import NothingSelected
from refusalkit.selection.refusal_score import (
    RefusalScoreOutcome,
    RefusalScoreSettings,
    refusal_tokens,
)
from refusalkit.selection.stability import per_prompt_activations, pick_stability
from refusalkit.selection.substring_score import SubstringScoreEngine, rate_threshold

SELECTORS = ("cosmic", "refusal-score", "refusal-substring")
# Tokens generated per validation prompt and candidate by the substring variant: enough for the
# opening phrase a refusal starts with ("I'm sorry, but I can't"), short enough to stay affordable.
SUBSTRING_SELECTION_TOKENS = 8
# compare: the four methods of the COSMIC paper's table (the substring variant is run on request).
METHODS = tuple((selector, steering) for selector in SELECTORS[:2] for steering in ("lce", "ace"))


def cosmic_settings(config: RunConfig, steering: str | None = None) -> CosmicSettings:
    return CosmicSettings(
        steering=steering or config.steering,
        l_low_fraction=config.l_low_fraction,
        l_low_second_half=config.l_low_second_half,
        l_low_layers=tuple(config.l_low_layers) if config.l_low_layers else None,
        aggregation=config.aggregation,
        prune_layer_fraction=config.prune_layer_fraction,
        min_layer=config.min_layer,
        kl_threshold=config.kl_threshold,
        median_peak_filter=config.median_peak_filter,
    )


def load_over_refusal(config: RunConfig) -> tuple[list[Prompt], PromptSource | None]:
    """The safe-but-scary prompts: a seeded sample of ``n_over_refusal`` (default ``n_test``;
    all of them if there are fewer)."""
    wanted = config.n_test if config.n_over_refusal is None else config.n_over_refusal
    if wanted <= 0:
        return [], None
    path = config.over_refusal
    prompts, source = load_prompts(path, config.column) if path else builtin_prompts("over_refusal")
    shuffled = sorted({p.text: p for p in prompts}.values(), key=lambda p: p.sha256)
    random.Random(f"{config.seed}:over_refusal").shuffle(shuffled)
    return shuffled[:wanted], source


@dataclass
class LoadedPrompts:
    """Both prompt classes as read (shared prompts already dropped), and their sources."""

    prompts: dict[str, list[Prompt]]
    sources: dict[str, PromptSource]
    overlap_removed: int


def read_prompt_sets(config: RunConfig) -> LoadedPrompts:
    """Read both prompt classes; fails before any model is loaded. A few prompts in both sets
    are dropped from both; more are refused (:func:`remove_overlap`)."""
    prompts, sources = {}, {}
    for label, path in (("harmful", config.harmful), ("harmless", config.harmless)):
        prompts[label], sources[label] = (
            load_prompts(path, config.column) if path else builtin_prompts(label)
        )
    names = (sources["harmful"].name, sources["harmless"].name)
    prompts["harmful"], prompts["harmless"], shared = remove_overlap(
        prompts["harmful"], prompts["harmless"], names
    )
    return LoadedPrompts(prompts, sources, shared)


def cut_splits(config: RunConfig, loaded: LoadedPrompts) -> dict[str, Splits]:
    return {
        label: split_prompts(
            prompts, config.n_train, config.n_val, config.n_test, config.seed, label
        )
        for label, prompts in loaded.prompts.items()
    }


@dataclass
class Session:
    """Everything the stages after loading need: model, chat format, splits, candidates."""

    config: RunConfig
    adapter: ModelAdapter
    chat: ChatFormat
    splits: dict[str, Splits]
    candidates: CandidateSet
    provenance: dict[str, Any]
    panel: JudgePanel
    over_refusal: list[Prompt]

    def chat_for(self, split: str) -> ChatFormat:
        return split_chat(self.config, self.chat, split)

    def batches(self, label: str, split: str) -> list[EncodedBatch]:
        return split_batches(self.config, self.chat, self.adapter, self.splits[label], split)


def split_chat(config: RunConfig, chat: ChatFormat, split: str) -> ChatFormat:
    """The chat format the prompts of ``split`` are rendered with: the adversarial condition's
    system prompt on train/val (the post-instruction tokens do not depend on it)."""
    system = split_systems(config).get(split)
    return chat if system is None else replace(chat, system=system)


def split_batches(
    config: RunConfig, chat: ChatFormat, adapter: ModelAdapter, splits: Splits, split: str
) -> list[EncodedBatch]:
    prompts = getattr(splits, split)
    return encode_batches(
        split_chat(config, chat, split), prompts, config.batch_size, adapter.device
    )


def split_systems(config: RunConfig) -> dict[str, SystemPrompt]:
    """The system prompt that replaces the run's own on some splits: the adversarial one of
    condition A (val) or B (train and val). Test prompts never get it."""
    if config.adversarial_prompt == "none":
        return {}
    adversarial = SystemPrompt.parse(config.adversarial_text)
    splits = ("val",) if config.adversarial_prompt == "val" else ("train", "val")
    return {split: adversarial for split in splits}


def adversarial_record(config: RunConfig) -> dict[str, Any] | None:
    """What ``summary.json``/``comparison.json`` record about the adversarial condition."""
    if config.adversarial_prompt == "none":
        return None
    return {
        "condition": "A" if config.adversarial_prompt == "val" else "B",
        "applied_to": sorted(split_systems(config)),
        "text": config.adversarial_text,
        "test_prompts": "evaluated without it",
    }


@dataclass
class PromptInputs:
    splits: dict[str, Splits]
    over_refusal: list[Prompt]


def open_session(
    config: RunConfig,
    run_dir: RunDirectory,
    resolved: ResolvedModel,
    inputs: PromptInputs,
    resuming: bool,
) -> Session:
    """Load the model and compute (or, when resuming, reload) the candidate directions."""
    override = ArchitectureOverride(config.layers_path, config.attention_path, config.mlp_path)
    adapter, resolved = load_resolved(
        resolved,
        device=config.device,
        dtype=config.dtype,
        trust_remote_code=config.trust_remote_code,
        override=override,
    )
    _record_hub_commit(run_dir, resolved, adapter)
    chat = build_chat_format(adapter.tokenizer, SystemPrompt.parse(config.system_prompt))
    panel = judge_panel(config, adapter)
    provenance = _provenance(resolved, adapter, chat)
    write_json(run_dir.file("provenance.json"), provenance)
    run_dir.status("candidates", "running")
    path = run_dir.file("candidates.safetensors")
    candidates = train_candidates(config, chat, adapter, inputs.splits, path, resuming)
    return Session(
        config, adapter, chat, inputs.splits, candidates, provenance, panel, inputs.over_refusal
    )


def _record_hub_commit(
    run_dir: RunDirectory, resolved: ResolvedModel, adapter: ModelAdapter
) -> None:
    """A hub model that was not in the local cache before loading has no commit in the run's
    identity yet; the loaded config knows it, so a later resume compares against it."""
    if resolved.fingerprint.get("kind") != "hub" or resolved.fingerprint.get("commit"):
        return
    commit = getattr(adapter.model.config, "_commit_hash", None)
    inputs = dict(read_json(run_dir.file("inputs.json")))
    inputs["model"] = {**resolved.fingerprint, "commit": commit}
    write_json(run_dir.file("inputs.json"), inputs)


def train_candidates(
    config: RunConfig,
    chat: ChatFormat,
    adapter: ModelAdapter,
    splits: dict[str, Splits],
    path: Path,
    resuming: bool,
) -> CandidateSet:
    """Difference-in-means candidates from the train prompts, under whatever hooks are active
    (the stage-1 edit of a two-stage run); reloaded from ``path`` when resuming."""
    if resuming and path.exists():
        return CandidateSet.load(path)
    candidates = compute_candidates(
        adapter,
        split_batches(config, chat, adapter, splits["harmful"], "train"),
        split_batches(config, chat, adapter, splits["harmless"], "train"),
        chat.n_post_instruction,
    )
    candidates.save(path)
    return candidates


SUMMARY_SELECTION_KEYS = (
    "method",
    "steering",
    "position",
    "layer",
    "score",
    "kl",
    "n_candidates",
    "n_kept",
    "n_kl_evaluated",
    "s_comply",
    "s_refuse",
    "bypass",
    "induce",
    "diagnostics",
)


def _cosmic_record(session: Session, steering: str) -> dict[str, Any]:
    pick = run_cosmic(
        session.adapter,
        session.candidates,
        session.batches("harmful", "val"),
        session.batches("harmless", "val"),
        cosmic_settings(session.config, steering),
    )
    layers = pick.evaluation_layers
    return {
        "method": "cosmic",
        "steering": steering,
        "position": pick.position,
        "layer": pick.layer,
        "score": pick.score,
        "s_comply": pick.s_comply,
        "s_refuse": pick.s_refuse,
        "kl": pick.kl,
        "n_candidates": pick.outcome.n_candidates,
        "n_kept": pick.outcome.n_kept,
        "n_kl_evaluated": pick.n_kl_evaluated,
        "l_low": list(layers.layers),
        "l_low_note": layers.note,
        "l_low_convention": "residual stream = block input (SPEC §0)",
        "layer_similarities": list(layers.similarities),
        "median_peak_layers": pick.outcome.median_layers,
        "settings": pick.settings_dict(),
        "work": _work(pick.work),
        "candidates": pick.table(),
        "ranking": [[r.position, r.layer] for r in pick.outcome.ranking()],
    }


def _output_settings(config: RunConfig, steering: str) -> RefusalScoreSettings:
    return RefusalScoreSettings(
        steering=steering,
        prune_layer_fraction=config.prune_layer_fraction,
        kl_threshold=config.kl_threshold,
        induce_threshold=config.induce_threshold,
    )


def _output_based_record(
    method: str,
    steering: str,
    outcome: RefusalScoreOutcome,
    settings: RefusalScoreSettings,
    extra: dict[str, Any],
) -> dict[str, Any]:
    """The ``selection.json`` record of an output-based selector (log-odds or substring)."""
    pick = outcome.selected
    kept = ("selected", "kl", "not_needed")
    ranked = sorted(outcome.records, key=lambda r: (r.status not in kept, _nan_last(r.bypass)))
    return {
        "method": method,
        "steering": steering,
        "position": pick.position,
        "layer": pick.layer,
        "score": pick.bypass,  # the criterion: refusal under removal (lower wins)
        "bypass": pick.bypass,
        "induce": pick.induce,
        "kl": pick.kl,
        "n_candidates": len(outcome.records),
        "n_kept": sum(r.status in kept for r in outcome.records),
        "n_kl_evaluated": sum(not math.isnan(r.kl) for r in outcome.records),
        "settings": asdict(settings),
        **extra,
        "candidates": [r.as_dict() for r in outcome.records],
        "ranking": [[r.position, r.layer] for r in ranked],
    }


def _refusal_score_record(session: Session, steering: str) -> dict[str, Any]:
    settings = _output_settings(session.config, steering)
    tokens = refusal_tokens(session.adapter.tokenizer)
    engine = RefusalScoreEngine(
        session.adapter,
        session.candidates,
        settings,
        tokens,
        session.batches("harmful", "val"),
        session.batches("harmless", "val"),
    )
    outcome = engine.run()
    extra = {
        "refusal_tokens": {"ids": list(tokens.ids), "strings": list(tokens.strings)},
        "work": _work(engine.work),
    }
    return _output_based_record("refusal-score", steering, outcome, settings, extra)


def _refusal_substring_record(session: Session, steering: str) -> dict[str, Any]:
    settings = _output_settings(session.config, steering)
    engine = SubstringScoreEngine(
        session.adapter,
        session.chat_for("val"),
        session.candidates,
        settings,
        session.splits["harmful"].val,
        session.splits["harmless"].val,
        session.panel.substring,
        max_new_tokens=SUBSTRING_SELECTION_TOKENS,
        batch_size=session.config.batch_size,
    )
    outcome = engine.run()
    extra = {
        "scores": "substring-judged refusal rate of greedy generations",
        "max_new_tokens": SUBSTRING_SELECTION_TOKENS,
        "induce_rate_threshold": rate_threshold(settings.induce_threshold),
        "work": {"generated_prompts": engine.generations},
    }
    return _output_based_record("refusal-substring", steering, outcome, settings, extra)


def _work(counter: WorkCounter) -> dict[str, Any]:
    """Machine-independent cost of a selection (block-forwards = prompts × decoder blocks run)."""
    return {
        "block_forwards": counter.block_forwards,
        "prompt_forwards": counter.prompt_forwards,
        "block_forwards_per_kind": counter.per_kind,
    }


def _nan_last(value: float) -> float:
    return math.inf if math.isnan(value) else value


def select_direction(session: Session, selector: str, steering: str) -> dict[str, Any]:
    """Run one selector and return its full ``selection.json`` record."""
    started = time.time()
    if selector == "cosmic":
        record = _cosmic_record(session, steering)
    elif selector == "refusal-score":
        record = _refusal_score_record(session, steering)
    elif selector == "refusal-substring":
        record = _refusal_substring_record(session, steering)
    else:
        raise RefusalkitError(f"invalid selector '{selector}': use {', '.join(SELECTORS)}")
    record["position_tokens"] = session.chat.position_labels()
    cosmic = selector == "cosmic"
    record["diagnostics"] = selection_diagnostics(
        record,
        score_key="score" if cosmic else "bypass",
        higher_is_better=cosmic,
        kl_threshold=session.config.kl_threshold,
    )
    record["seconds"] = round(time.time() - started, 1)
    return record


def save_direction(path: Path, session: Session, record: dict[str, Any]) -> None:
    direction = Direction.from_candidates(session.candidates, record["position"], record["layer"])
    direction.save(path, steering=record["steering"], method=record["method"])


JUDGES = ("substring", "log-odds", "model")


def judge_panel(config: RunConfig, adapter: ModelAdapter) -> JudgePanel:
    """Every judge the configuration asks for; the judge model is loaded here, once."""
    if config.judge not in JUDGES:
        raise RefusalkitError(f"invalid judge '{config.judge}': use {', '.join(JUDGES)}")
    phrases = read_phrase_file(config.refusal_phrases) if config.refusal_phrases else None
    substring = SubstringJudge(phrases) if phrases else SubstringJudge()
    model = (
        load_model_judge(config.judge_model, config.judge_model_kind, config.device)
        if config.judge_model
        else None
    )
    primary = model.name if config.judge == "model" and model else config.judge
    tokens = refusal_tokens(adapter.tokenizer)
    return JudgePanel(substring, tokens.ids, model, primary)


@dataclass
class Baselines:
    """Clean completions and scores of every test set, shared by all methods of a session."""

    runs: dict[str, ConditionRun]

    @property
    def rows(self) -> list[dict[str, Any]]:
        return [row for run in self.runs.values() for row in run.rows]


def test_sets(session: Session) -> dict[str, list[Prompt]]:
    sets = {label: session.splits[label].test for label in ("harmful", "harmless")}
    if session.over_refusal:
        sets["over_refusal"] = session.over_refusal
    return sets


def _settings(config: RunConfig) -> EvaluationSettings:
    return EvaluationSettings(config.max_new_tokens, config.batch_size)


def baseline_runs(session: Session, labels: Sequence[str] = TEST_SETS) -> Baselines:
    """Completions with no (further) intervention, shared by every method evaluated in a
    session."""
    return Baselines(
        {
            label: run_condition(
                session.adapter,
                session.chat,
                label,
                prompts,
                None,
                _settings(session.config),
                session.panel,
                score_completions=label == "harmless",  # the coherence reference
            )
            for label, prompts in test_sets(session).items()
            if label in labels
        }
    )


@dataclass
class EvaluationResult:
    rows: list[dict[str, Any]]
    block: dict[str, Any]  # the ``evaluation`` block of summary.json


def evaluate(session: Session, record: dict[str, Any], baselines: Baselines) -> EvaluationResult:
    """Greedy completions on the test sets: harmful and over-refusal prompts under removal,
    harmless under addition; every judge; coherence under removal on harmless prompts."""
    steering, position, layer = record["steering"], record["position"], record["layer"]
    remove = removal(session.candidates, steering, position, layer)
    add = addition(session.candidates, steering, position, layer)
    interventions = {"harmful": remove, "harmless": add, "over_refusal": remove}
    rows = list(baselines.rows)
    for label, prompts in test_sets(session).items():
        rows += run_condition(
            session.adapter,
            session.chat,
            label,
            prompts,
            interventions[label],
            _settings(session.config),
            session.panel,
        ).rows
    block = summarise(rows, session.panel)
    block["interventions"] = {
        label: interventions[label].describe() for label in test_sets(session)
    }
    block["coherence"] = coherence(
        session.adapter, session.chat, baselines.runs["harmless"], remove
    )
    return EvaluationResult(rows, block)


def _summary_selection(record: dict[str, Any]) -> dict[str, Any]:
    return {k: record[k] for k in SUMMARY_SELECTION_KEYS if k in record}


# Weakly aligned models (SPEC §5) steer with ACE, as the COSMIC paper does: its α sweeps the
# refusal component's value from the harmless mean (α=0) upward, whatever the activation was.
WEAK_ALIGNMENT_STEERING = "ace"


def weak_alignment(
    session: Session, run_dir: RunDirectory, resuming: bool
) -> tuple[dict[str, Any], dict[str, Any]]:
    """SPEC §5, weakly aligned models. ``two-stage``: (1) select with COSMIC-ACE on the model as
    it is and apply ACE α=0 — a model that refuses less, made the way the paper made its weakly
    aligned models; (2) with that edit active throughout, recompute the candidates, select again
    with ``L_low`` restricted to the second half of the layers, and sweep ACE addition over α.
    ``direct`` skips stage 1. Returns the summary's parts and stage 2's selection record; the
    ``evaluation`` block is that of the model being steered (after stage 1)."""
    config = session.config
    parts: dict[str, Any] = {}
    stage1: AffineEdit | None = None
    steered: Baselines | None = None
    if config.weak_alignment == "two-stage":
        stage1, parts["stage1"], steered = _weak_stage1(session, run_dir, resuming)
    with applied(session.adapter, stage1):
        run_dir.status("stage2-candidates", "running")
        candidates = session.candidates
        if stage1:  # the edited model's own candidates
            path = run_dir.file("candidates-stage2.safetensors")
            candidates = train_candidates(
                config, session.chat, session.adapter, session.splits, path, resuming
            )
        # Stage-2 candidates before the stage-1 layer are dropped: the stage-1 edit would project
        # their refusal component out again at its layer, undoing the steering.
        stage2 = replace(
            session,
            config=replace(
                config,
                steering=WEAK_ALIGNMENT_STEERING,
                l_low_second_half=True,
                min_layer=stage1.layer if stage1 else config.min_layer,
            ),
            candidates=candidates,
        )
        run_dir.status("stage2-selection", "running")
        record = _selection_stage(
            stage2, run_dir, "selection.json", "cosmic", WEAK_ALIGNMENT_STEERING, resuming
        )
        save_direction(run_dir.file("direction.safetensors"), stage2, record)
        run_dir.status("evaluation", "running")
        if steered is None:
            baselines = baseline_runs(stage2)
        else:  # stage 1 ran the edited model on harmful and harmless prompts already
            baselines = steered
            baselines.runs.update(baseline_runs(stage2, ("over_refusal",)).runs)
        result = evaluate(stage2, record, baselines)
        run_dir.status("alpha-sweep", "running")
        points, sweep_rows = _alpha_sweep(stage2, record, result.rows)
    write_jsonl(run_dir.file("completions.jsonl"), result.rows + sweep_rows)
    unsteered = {
        label: Rate(
            result.block[label]["baseline_refusal_count"], result.block[label]["baseline_judged"]
        )
        for label in ("harmful", "harmless")
    }
    what = (
        f"ACE addition of the {'stage-2' if stage1 else 'selected'} direction (position "
        f"{record['position']}, layer {record['layer']})"
    )
    contrast = (
        contrast_retained(session.candidates, candidates, record["position"], record["layer"])
        if stage1
        else None
    )
    lead = STAGE2_NO_REFUSAL_LEAD if stage1 else NO_REFUSAL_LEAD
    verdict = assess(unsteered["harmful"], unsteered["harmless"], points, what, lead=lead)
    if contrast and not verdict.steerable:
        verdict = replace(verdict, statement=f"{verdict.statement} {contrast_sentence(contrast)}")
    parts.update(
        {
            "verdict": run_verdict(result.rows),
            "selection": _summary_selection(record),
            "evaluation": result.block,
            "alpha_sweep": [point.as_dict() for point in points],
            "weak_alignment": {
                "mode": config.weak_alignment,
                "steering": WEAK_ALIGNMENT_STEERING,
                "l_low": record["l_low"],
                "l_low_note": record["l_low_note"],
                "unsteered": {
                    label: {
                        "rate": rate.value,
                        "count": rate.count,
                        "n": rate.n,
                        "ci95": list(rate.ci95),
                    }
                    for label, rate in unsteered.items()
                },
                **verdict.as_dict(),
                **({"stage2_contrast": contrast} if contrast else {}),
            },
        }
    )
    return parts, record


def contrast_sentence(contrast: dict[str, Any]) -> str:
    """The two-stage finding's explanation in numbers: how much harmful−harmless difference the
    stage-1 edit left where stage 2 picked its direction."""
    ratio, cosine = contrast["norm_ratio"], contrast["cosine"]
    where = f"position {contrast['position']}, layer {contrast['layer']}"
    if ratio is None:
        return f"The original model has no harmful−harmless difference at {where}."
    angle = f", cosine {cosine:.2f} with it" if cosine is not None else ""
    return (
        f"With stage 1 active, the harmful−harmless difference at the stage-2 pick ({where}) "
        f"has {ratio:.2f} of the original model's norm there{angle}: stage 2 draws its direction "
        "from what the stage-1 edit left of that contrast."
    )


def _weak_stage1(
    session: Session, run_dir: RunDirectory, resuming: bool
) -> tuple[AffineEdit, dict[str, Any], Baselines]:
    """Select with COSMIC-ACE and return the ACE α=0 edit, what it did to the harmful and
    harmless test prompts, and the edited model's completions (the baselines of stage 2)."""
    run_dir.status("stage1-selection", "running")
    record = _selection_stage(
        session, run_dir, "stage1-selection.json", "cosmic", WEAK_ALIGNMENT_STEERING, resuming
    )
    save_direction(run_dir.file("stage1-direction.safetensors"), session, record)
    edit = removal(session.candidates, WEAK_ALIGNMENT_STEERING, record["position"], record["layer"])
    assert isinstance(edit, AffineEdit)
    run_dir.status("stage1-evaluation", "running")
    labels = ("harmful", "harmless")
    original = baseline_runs(session, labels)
    with applied(session.adapter, edit):
        edited = baseline_runs(session, labels)
    # The edited model's completions are stage 1's "intervention" rows.
    as_intervention = [
        {**row, "condition": "intervention", "intervention": edit.describe()} for row in edited.rows
    ]
    rows = original.rows + as_intervention
    write_jsonl(run_dir.file("completions-stage1.jsonl"), rows)
    block = summarise(rows, session.panel)
    stage1 = {
        "selection": _summary_selection(record),
        "intervention": edit.describe(),
        **{label: block[label] for label in labels},
        "judge": block["judge"],
    }
    return edit, stage1, edited


def _alpha_sweep(
    session: Session,
    record: dict[str, Any],
    evaluated: Sequence[dict[str, Any]],
) -> tuple[list[SweepPoint], list[dict[str, Any]]]:
    """ACE addition at each α on the harmful and harmless test prompts (rows carry ``alpha``).
    A test set the evaluation already ran under the same intervention (the same record's direction,
    so the same description: harmless prompts at α=1) is taken from ``evaluated``, not generated
    again."""
    points, all_rows = [], []
    for alpha in session.config.alphas:
        steer = addition(
            session.candidates, WEAK_ALIGNMENT_STEERING, record["position"], record["layer"], alpha
        )
        rows = []
        for label in ("harmful", "harmless"):
            done = [
                r for r in evaluated if r["set"] == label and r["intervention"] == steer.describe()
            ]
            if not done:
                done = run_condition(
                    session.adapter, session.chat, label, test_sets(session)[label], steer,
                    _settings(session.config), session.panel,
                ).rows  # fmt: skip
            rows += [{**row, "condition": "alpha_sweep", "alpha": alpha} for row in done]
        points.append(sweep_point(alpha, rows))
        all_rows += rows
    return points, all_rows


def _provenance(resolved: ResolvedModel, adapter: ModelAdapter, chat: ChatFormat) -> dict[str, Any]:
    import transformers

    embedded = EMBEDDED_MODELS.get(resolved.spec)
    return {
        "model": {
            "spec": resolved.spec,
            "kind": resolved.kind,
            "path": resolved.path,
            "gguf_sha256": embedded.sha256 if embedded else None,
            # sha256 of every file of the weights' directory (or the hub commit): what ran.
            "identity": resolved.fingerprint,
            "class": type(adapter.model).__name__,
            "n_layers": adapter.n_layers,
            "hidden_size": adapter.hidden_size,
            "dtype": str(adapter.dtype),
            "device": str(adapter.device),
            "layers_path": adapter.layers_path,
        },
        "chat": {
            "system_prompt": chat.system.describe(),
            "removed_template_default_system_prompt": chat.removed_default_system,
            "post_instruction_tokens": chat.position_labels(),
            "post_instruction_ids": list(chat.suffix_ids),
            "example": chat.render("<instruction>"),
        },
        "versions": {
            "refusalkit": __version__,
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "python": platform.python_version(),
        },
    }


def _config_digest(config: dict[str, Any]) -> str:
    import json

    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:16]


def _start(
    config: RunConfig, out: Path, force: bool, workflow: str
) -> tuple[RunDirectory, ResolvedModel, PromptInputs, bool]:
    """Validate everything that can be validated before a file is written — settings, the output
    path, prompt files, the model's identity, every prompt's token budget — then open (create,
    resume or replace) and lock the run directory. Nothing of an existing run directory is touched
    before every input has passed."""
    check_numbers(config)
    for steering in ("lce", "ace"):
        cosmic_settings(config, steering)
    if config.selector not in SELECTORS:
        raise RefusalkitError(f"invalid selector '{config.selector}': use {', '.join(SELECTORS)}")
    if config.judge not in JUDGES:
        raise RefusalkitError(f"invalid judge '{config.judge}': use {', '.join(JUDGES)}")
    if config.judge == "model" and not config.judge_model:
        raise RefusalkitError("--judge model needs --judge-model PATH (a local instruct model)")
    if config.refusal_phrases:
        read_phrase_file(config.refusal_phrases)
    SystemPrompt.parse(config.system_prompt)
    _check_hard_cases(config)
    check_output_path(out)
    loaded = read_prompt_sets(config)
    splits = cut_splits(config, loaded)
    over_refusal, over_source = load_over_refusal(config)
    resolved = resolve_model_path(config.model)  # unknown models fail before anything is written
    _check_budgets(config, resolved, loaded, over_refusal)
    identity = _identity(workflow, config, loaded, over_source, resolved)
    result = "comparison.json" if workflow == "compare" else "summary.json"
    run_dir = RunDirectory.open(out, identity, result_file=result, force=force)
    try:
        manifest = split_manifest(splits, loaded.sources)
        manifest["overlap_removed"] = loaded.overlap_removed
        if over_source is not None:
            manifest["over_refusal"] = {
                "source": over_source.name,
                "source_sha256": over_source.sha256,
                "column": over_source.column,
                "prompts": [
                    {"sha256": p.sha256, "category": p.category, "text": p.text}
                    for p in over_refusal
                ],
            }
        write_json(run_dir.file("splits.json"), manifest)
    except BaseException:
        run_dir.close()
        raise
    resuming = run_dir.resumed_from is not None
    return run_dir, resolved, PromptInputs(splits, over_refusal), resuming


def _check_budgets(
    config: RunConfig, resolved: ResolvedModel, loaded: LoadedPrompts, over_refusal: list[Prompt]
) -> None:
    """Every prompt that may be used (all of each file, so the verdict does not depend on the
    seed) must fit the context with the generation budget: needs the tokenizer only."""
    tokenizer = load_tokenizer(resolved, trust_remote_code=config.trust_remote_code)
    chat = build_chat_format(tokenizer, SystemPrompt.parse(config.system_prompt))
    context = context_length(resolved, trust_remote_code=config.trust_remote_code)
    prompts = [p for label in ("harmful", "harmless") for p in loaded.prompts[label]]
    check_token_budget(chat, [*prompts, *over_refusal], context, config.max_new_tokens)


def _identity(
    workflow: str,
    config: RunConfig,
    loaded: LoadedPrompts,
    over_source: PromptSource | None,
    resolved: ResolvedModel,
) -> dict[str, Any]:
    """The resume key: the workflow, every setting, and the content of every input."""
    phrases = (
        hashlib.sha256(Path(config.refusal_phrases).expanduser().read_bytes()).hexdigest()
        if config.refusal_phrases
        else None
    )
    return {
        "config": config.as_dict(),
        "workflow": workflow,
        "harmful_prompts": loaded.sources["harmful"].sha256,
        "harmless_prompts": loaded.sources["harmless"].sha256,
        "over_refusal_prompts": over_source.sha256 if over_source else None,
        "refusal_phrases": phrases,
        "model": resolved.fingerprint,
        # The judge model's verdicts are part of a resumed evaluation: its contents count too.
        "judge_model": (
            resolve_model_path(config.judge_model).fingerprint if config.judge_model else None
        ),
    }


def _check_hard_cases(config: RunConfig) -> None:
    """Options of SPEC §5's settings that can be checked before anything is loaded."""
    if config.adversarial_prompt not in ADVERSARIAL_CONDITIONS:
        raise RefusalkitError(
            f"invalid --adversarial-prompt '{config.adversarial_prompt}': use "
            + ", ".join(ADVERSARIAL_CONDITIONS)
        )
    if config.adversarial_prompt != "none":
        SystemPrompt.parse(config.adversarial_text)
    if config.weak_alignment not in WEAK_ALIGNMENT_MODES:
        raise RefusalkitError(
            f"invalid --weak-alignment '{config.weak_alignment}': use "
            + ", ".join(WEAK_ALIGNMENT_MODES)
        )
    if config.stability and (config.selector != "cosmic" or config.weak_alignment != "none"):
        raise RefusalkitError(
            "--stability re-runs COSMIC selection on resampled train prompts: use it with "
            "--selector cosmic and without --weak-alignment"
        )
    if config.weak_alignment != "none":
        if config.selector != "cosmic":
            raise RefusalkitError(
                "--weak-alignment selects with COSMIC (its point: no refusals needed); "
                "drop --selector"
            )
        if not config.alphas or any(not math.isfinite(a) for a in config.alphas):
            raise RefusalkitError("--alphas needs one or more finite numbers, e.g. 1,2,3")


def _selection_stage(
    session: Session, run_dir: RunDirectory, name: str, selector: str, steering: str, resuming: bool
) -> dict[str, Any]:
    path = run_dir.file(name)
    if resuming and path.exists():
        stored = dict(read_json(path))
        if "error" in stored:
            raise NothingSelected(stored["error"], [])
        return stored
    try:
        record = select_direction(session, selector, steering)
    except NothingSelected as failure:
        # Kept on disk: the scores of a selection that found nothing explain why (report heatmaps).
        write_json(
            path,
            {
                "method": selector,
                "steering": steering,
                "error": str(failure),
                "candidates": [c.as_dict() for c in failure.candidates],
                "position_tokens": session.chat.position_labels(),
            },
        )
        raise
    write_json(path, record)
    return record


def run(config: RunConfig, out: Path, *, force: bool = False) -> dict[str, Any]:
    """Run the whole pipeline (COSMIC by default) and return ``summary.json``'s content."""
    started = time.time()
    run_dir, resolved, inputs, resuming = _start(config, out, force, "run")
    stage = "load"
    with run_dir:
        try:
            run_dir.status(stage, "running")
            session = open_session(config, run_dir, resolved, inputs, resuming)
            if config.weak_alignment != "none":
                stage = "weak-alignment"
                summary, record = weak_alignment(session, run_dir, resuming)
            else:
                stage = "selection"
                run_dir.status(stage, "running")
                record = _selection_stage(
                    session, run_dir, "selection.json", config.selector, config.steering, resuming
                )
                save_direction(run_dir.file("direction.safetensors"), session, record)
                selection = _summary_selection(record)
                if config.stability:
                    stage = "stability"
                    run_dir.status(stage, "running")
                    selection["stability"] = _stability_stage(session, run_dir, record, resuming)
                stage = "evaluation"
                run_dir.status(stage, "running")
                block, rows = _evaluation_stage(session, run_dir, record, resuming)
                summary = {
                    "verdict": run_verdict(rows),
                    "selection": selection,
                    "evaluation": block,
                }
            summary = {
                "model": config.model,
                "verdict": summary.pop("verdict"),
                **summary,
                "adversarial": adversarial_record(config),
                "config_sha256": _config_digest(config.as_dict()),
                "seconds": round(time.time() - started, 1),
            }
            stage = "report"
            run_dir.status(stage, "running")
            write_text(
                run_dir.file("report.md"), render_report(summary, session.provenance, record)
            )
            _finish(run_dir, "summary.json", summary)
            return summary
        except BaseException as error:
            run_dir.status(stage, "failed", f"{type(error).__name__}: {error}")
            raise


STABILITY_SHOWN = 5


def _stability_stage(
    session: Session, run_dir: RunDirectory, record: dict[str, Any], resuming: bool
) -> dict[str, Any]:
    """``--stability N``: how often COSMIC picks each candidate on bootstrap resamples of the
    train prompts (``stability.json``; the summary keeps the pick's share and the top wins)."""
    path = run_dir.file("stability.json")
    if resuming and path.exists():
        full = dict(read_json(path))
    else:
        config = session.config
        n_positions = session.chat.n_post_instruction
        activations = {
            label: per_prompt_activations(
                session.adapter, session.batches(label, "train"), n_positions,
                f"stability: {label} train activations",
            )
            for label in ("harmful", "harmless")
        }  # fmt: skip
        full = pick_stability(
            session.adapter,
            activations["harmful"],
            activations["harmless"],
            cosmic_settings(config, record["steering"]),
            session.batches("harmful", "val"),
            session.batches("harmless", "val"),
            pick=(record["position"], record["layer"]),
            resamples=config.stability,
            seed=config.seed,
        ).as_dict()
        write_json(path, full)
    return {**full, "wins": full["wins"][:STABILITY_SHOWN]}


def _evaluation_stage(
    session: Session, run_dir: RunDirectory, record: dict[str, Any], resuming: bool
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The evaluation block and its completion rows; a resumed run whose evaluation finished
    (``evaluation.json``, written after ``completions.jsonl``) reuses them instead of generating
    every completion again."""
    path, completions = run_dir.file("evaluation.json"), run_dir.file("completions.jsonl")
    if resuming and path.exists() and completions.exists():
        return dict(read_json(path)), read_jsonl(completions)
    result = evaluate(session, record, baseline_runs(session))
    write_jsonl(completions, result.rows)
    write_json(path, result.block)
    return result.block, result.rows


def _finish(run_dir: RunDirectory, result_file: str, result: dict[str, Any]) -> None:
    """The last steps of every workflow, in the order that keeps "finished" honest: the HTML report
    (rendered as the finished run will read), then the result file, then the complete status. A
    failure in any of them leaves no result file, so the same command resumes."""
    complete = run_dir.status_record("done", "complete")
    write_html_report(run_dir.path, pending={result_file: result, "status.json": complete})
    write_json(run_dir.file(result_file), result)
    write_json(run_dir.file("status.json"), complete)


def compare(config: RunConfig, out: Path, *, force: bool = False) -> dict[str, Any]:
    """COSMIC and refusal-score selection, each with LCE and ACE, on the same candidates and
    splits; one table (``comparison.json``, ``comparison.md``)."""
    started = time.time()
    run_dir, resolved, inputs, resuming = _start(config, out, force, "compare")
    stage = "load"
    with run_dir:
        try:
            run_dir.status(stage, "running")
            session = open_session(config, run_dir, resolved, inputs, resuming)
            stage = "baseline"
            baselines = baseline_runs(session)
            rows = []
            for selector, steering in METHODS:
                stage = f"{selector}-{steering}"
                run_dir.status(stage, "running")
                try:
                    record = _selection_stage(
                        session, run_dir, f"selection-{stage}.json", selector, steering, resuming
                    )
                except NothingSelected as failure:  # a method that finds nothing is a result too
                    rows.append({"selector": selector, "steering": steering, "error": str(failure)})
                    continue
                save_direction(run_dir.file(f"direction-{stage}.safetensors"), session, record)
                result = evaluate(session, record, baselines)
                write_jsonl(run_dir.file(f"completions-{stage}.jsonl"), result.rows)
                rows.append(
                    {**comparison_row(record, result.block), "verdict": run_verdict(result.rows)}
                )
            working = [
                f"{row['selector']}-{row['steering']}"
                for row in rows
                if row.get("verdict", {}).get("works")
            ]
            comparison = {
                "model": config.model,
                "working_methods": working,
                "rows": rows,
                "adversarial": adversarial_record(config),
                "judge": session.panel.primary,
                "seconds": round(time.time() - started, 1),
            }
            stage = "report"
            run_dir.status(stage, "running")
            write_text(run_dir.file("comparison.md"), render_comparison(comparison))
            _finish(run_dir, "comparison.json", comparison)
            return comparison
        except BaseException as error:
            run_dir.status(stage, "failed", f"{type(error).__name__}: {error}")
            raise


def comparison_row(record: dict[str, Any], block: dict[str, Any]) -> dict[str, Any]:
    """One method's line of ``comparison.json``: its pick, every rate with count and interval,
    selection KL (validation) and the coherence numbers (test)."""
    row: dict[str, Any] = {
        "selector": record["method"],
        "steering": record["steering"],
        "position": record["position"],
        "layer": record["layer"],
        "score": record["score"],
        "kl": record["kl"],
        "n": block["harmful"]["n"],
    }
    for label in ("harmful", "harmless", "over_refusal"):
        if label not in block:
            continue
        for condition in ("baseline", "intervention"):
            for suffix in ("rate", "count", "rate_ci95"):
                key = f"{condition}_refusal_{suffix}"
                row[f"{label}_{key}"] = block[label][key]
        row[f"{label}_n"] = block[label]["n"]
    for key in ("intervention_compliance_rate", "intervention_compliance_count",
                "intervention_compliance_rate_ci95"):  # fmt: skip
        row[f"harmful_{key}"] = block["harmful"][key]
    coherence_block = block["coherence"]
    row["test_kl"] = coherence_block["kl"]
    row["cross_entropy_increase"] = coherence_block["cross_entropy_increase"]
    row["baseline_cross_entropy"] = coherence_block["baseline_cross_entropy"]
    row["intervention_cross_entropy"] = coherence_block["intervention_cross_entropy"]
    for key in ("degenerate_rate", "degenerate_count", "degenerate_n", "degenerate_rate_ci95"):
        row[key] = block[key]
    row["selection_seconds"] = record["seconds"]
    return row
