"""``refusalkit compare``: the selection methods of the COSMIC paper's table on the same candidates
and splits."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from refusalkit.config import STEERINGS, RunConfig, Selector, Steering
from refusalkit.evaluation.verdict import judge_run
from refusalkit.io import (
    write_jsonl,
    write_text,
)
from refusalkit.report.markdown import render_comparison
from refusalkit.runs.records import (
    Comparison,
    ComparisonRow,
    Evaluation,
    FailedMethod,
    RunVerdict,
)
from refusalkit.runs.stages import finish, tracked
from refusalkit.selection.filters import NothingSelected
from refusalkit.workflows.evaluate import baseline_runs, evaluate
from refusalkit.workflows.inputs import adversarial_record
from refusalkit.workflows.selectors import save_direction, selection_stage
from refusalkit.workflows.session import open_session, start_run

# compare: the four methods of the COSMIC paper's table (the substring variant is run on request).
METHODS: tuple[tuple[Selector, Steering], ...] = tuple(
    (selector, steering) for selector in ("cosmic", "refusal-score") for steering in STEERINGS
)


def compare(config: RunConfig, out: Path, *, force: bool = False) -> Comparison:
    """COSMIC and refusal-score selection, each with LCE and ACE, on the same candidates and
    splits; one table (``comparison.json``, ``comparison.md``)."""
    started = time.time()
    run_dir, resolved, inputs, resuming = start_run(config, out, force, "compare")
    with tracked(run_dir) as stages:
        session = open_session(config, run_dir, resolved, inputs, resuming)
        stages.enter("baseline")
        baselines = baseline_runs(session)
        rows: list[ComparisonRow | FailedMethod] = []
        for selector, steering in METHODS:
            name = f"{selector}-{steering}"
            stages.enter(name)
            try:
                record = selection_stage(
                    session, run_dir, f"selection-{name}.json", selector, steering, resuming
                )
            except NothingSelected as failure:  # a method that finds nothing is a result too
                rows.append(FailedMethod(selector, steering, str(failure)))
                continue
            save_direction(run_dir.file(f"direction-{name}.safetensors"), session, record)
            result = evaluate(session, record, baselines)
            write_jsonl(run_dir.file(f"completions-{name}.jsonl"), result.rows)
            rows.append(comparison_row(record, result.evaluation, judge_run(result.rows)))
        comparison = Comparison(
            model=config.model,
            working_methods=[
                row.name for row in rows if isinstance(row, ComparisonRow) and row.verdict.works
            ],
            rows=rows,
            adversarial=adversarial_record(config),
            judge=session.panel.primary,
            seconds=round(time.time() - started, 1),
        )
        stages.enter("report")
        write_text(run_dir.file("comparison.md"), render_comparison(comparison))
        finish(run_dir, "comparison.json", comparison.to_dict())
        return comparison


def comparison_row(
    record: dict[str, Any], evaluation: Evaluation, verdict: RunVerdict
) -> ComparisonRow:
    """One method's line of ``comparison.json``: its pick, every rate with count and interval,
    selection KL (validation) and the coherence numbers (test)."""
    coherence = evaluation.coherence
    compliance = evaluation.sets["harmful"].compliance
    assert coherence.cross_entropy_increase is not None and evaluation.degenerate is not None
    assert compliance is not None  # the harmful set always records attack success
    return ComparisonRow(
        selector=record["method"],
        steering=record["steering"],
        position=record["position"],
        layer=record["layer"],
        score=record["score"],
        kl=record["kl"],
        sets=dict(evaluation.sets),
        compliance=compliance,
        test_kl=coherence.kl,
        cross_entropy_increase=coherence.cross_entropy_increase,
        baseline_cross_entropy=coherence.baseline_cross_entropy,
        intervention_cross_entropy=coherence.intervention_cross_entropy,
        degenerate=evaluation.degenerate,
        selection_seconds=record["seconds"],
        verdict=verdict,
    )
