"""Weakly aligned models (SPEC §5): the direct and two-stage procedures and the α sweep."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from refusalkit.config import Steering, WeakAlignmentMode
from refusalkit.directions import contrast_retained
from refusalkit.evaluation.metrics import Rate
from refusalkit.evaluation.suite import (
    judged_evaluation,
    run_condition,
)
from refusalkit.evaluation.sweep import (
    MIN_RISE,
    NO_REFUSAL_LEAD,
    STAGE2_NO_REFUSAL_LEAD,
    SweepPoint,
    assess,
    sweep_point,
)
from refusalkit.evaluation.verdict import judge_run
from refusalkit.interventions import AffineEdit, addition, applied, removal
from refusalkit.io import (
    write_jsonl,
)
from refusalkit.runs import RunDirectory
from refusalkit.runs.records import (
    SelectionSummary,
    Stage1,
    StageContrast,
    WeakAlignment,
    WeakAlignmentRun,
)
from refusalkit.workflows.evaluate import (
    Baselines,
    RunOutcome,
    baseline_runs,
    evaluate,
    evaluation_settings,
    test_sets,
)
from refusalkit.workflows.selectors import save_direction, selection_stage
from refusalkit.workflows.session import Session, train_candidates

# Weakly aligned models (SPEC §5) steer with ACE, as the COSMIC paper does: its α sweeps the
# refusal component's value from the harmless mean (α=0) upward, whatever the activation was.
WEAK_ALIGNMENT_STEERING: Steering = "ace"


def weak_alignment(session: Session, run_dir: RunDirectory, resuming: bool) -> RunOutcome:
    """SPEC §5, weakly aligned models. ``two-stage``: (1) select with COSMIC-ACE on the model as
    it is and apply ACE α=0 — a model that refuses less, made the way the paper made its weakly
    aligned models; (2) with that edit active throughout, recompute the candidates, select again
    with ``L_low`` restricted to the second half of the layers, and sweep ACE addition over α.
    ``direct`` skips stage 1. The evaluation is that of the model being steered (after stage 1),
    the record stage 2's selection."""
    stage1: AffineEdit | None = None
    stage1_record: Stage1 | None = None
    steered: Baselines | None = None
    if session.config.weak_alignment == "two-stage":
        stage1, stage1_record, steered = _weak_stage1(session, run_dir, resuming)
    with applied(session.adapter, stage1):
        stage2 = _stage2_session(session, run_dir, resuming, stage1)
        run_dir.status("stage2-selection", "running")
        record = selection_stage(
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
    evaluated = result.evaluation.sets
    unsteered = {label: evaluated[label].baseline for label in ("harmful", "harmless")}
    contrast = (
        contrast_retained(
            session.candidates, stage2.candidates, record["position"], record["layer"]
        )
        if stage1
        else None
    )
    weak = _weak_alignment_record(
        session.config.weak_alignment, record, unsteered, points, contrast, bool(stage1)
    )
    return RunOutcome(
        record,
        SelectionSummary.from_dict(record),
        result.evaluation,
        judge_run(result.rows),
        WeakAlignmentRun(tuple(points), weak, stage1_record),
    )


def _stage2_session(
    session: Session, run_dir: RunDirectory, resuming: bool, stage1: AffineEdit | None
) -> Session:
    """The session stage 2 selects in: COSMIC-ACE with ``L_low`` in the second half of the layers,
    on the candidates of the model as stage 1 left it (with ``stage1`` active while this runs)."""
    config = session.config
    run_dir.status("stage2-candidates", "running")
    candidates = session.candidates
    if stage1:  # the edited model's own candidates
        path = run_dir.file("candidates-stage2.safetensors")
        candidates = train_candidates(
            config, session.chat, session.adapter, session.splits, path, resuming
        )
    # Stage-2 candidates before the stage-1 layer are dropped: the stage-1 edit would project
    # their refusal component out again at its layer, undoing the steering.
    return replace(
        session,
        config=replace(
            config,
            steering=WEAK_ALIGNMENT_STEERING,
            l_low_second_half=True,
            min_layer=stage1.layer if stage1 else config.min_layer,
        ),
        candidates=candidates,
    )


def _weak_alignment_record(
    mode: WeakAlignmentMode,
    record: dict[str, Any],
    unsteered: dict[str, Rate],
    points: Sequence[SweepPoint],
    contrast: dict[str, Any] | None,
    two_stage: bool,
) -> WeakAlignment:
    """The sweep's verdict on the selected direction, with the stage-1 contrast left at the
    stage-2 pick (``contrast``) as its explanation when the direction does not steer."""
    what = (
        f"ACE addition of the {'stage-2' if two_stage else 'selected'} direction (position "
        f"{record['position']}, layer {record['layer']})"
    )
    lead = STAGE2_NO_REFUSAL_LEAD if two_stage else NO_REFUSAL_LEAD
    verdict = assess(unsteered["harmful"], unsteered["harmless"], points, what, lead=lead)
    if contrast and not verdict.steerable:
        verdict = replace(verdict, statement=f"{verdict.statement} {contrast_sentence(contrast)}")
    return WeakAlignment(
        mode=mode,
        steering=WEAK_ALIGNMENT_STEERING,
        l_low=list(record["l_low"]),
        l_low_note=record["l_low_note"],
        unsteered=unsteered,
        steerable=verdict.steerable,
        best_alpha=verdict.best_alpha,
        harmful_monotonic=verdict.harmful_monotonic,
        min_rise=MIN_RISE,
        statement=verdict.statement,
        stage2_contrast=StageContrast.from_dict(contrast) if contrast else None,
    )


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
) -> tuple[AffineEdit, Stage1, Baselines]:
    """Select with COSMIC-ACE and return the ACE α=0 edit, what it did to the harmful and
    harmless test prompts, and the edited model's completions (the baselines of stage 2)."""
    run_dir.status("stage1-selection", "running")
    record = selection_stage(
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
    judged = judged_evaluation(rows, session.panel)
    stage1 = Stage1(
        SelectionSummary.from_dict(record),
        edit.describe(),
        {label: judged.sets[label] for label in labels},
        judged.judge,
    )
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
                    evaluation_settings(session.config), session.panel,
                ).rows  # fmt: skip
            rows += [{**row, "condition": "alpha_sweep", "alpha": alpha} for row in done]
        points.append(sweep_point(alpha, rows))
        all_rows += rows
    return points, all_rows
