"""The evaluation stage: baselines, the selected direction's removal and addition on the test
prompts, and the resumable ``evaluation.json``."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from refusalkit.config import (
    RunConfig,
)
from refusalkit.evaluation.suite import (
    TEST_SETS,
    ConditionRun,
    EvaluationSettings,
    coherence,
    judged_evaluation,
    run_condition,
)
from refusalkit.interventions import addition, removal
from refusalkit.io import (
    read_json,
    read_jsonl,
    write_json,
    write_jsonl,
)
from refusalkit.prompts.datasets import (
    Prompt,
)
from refusalkit.runs import RunDirectory
from refusalkit.runs.records import Evaluation, RunVerdict, SelectionSummary, WeakAlignmentRun
from refusalkit.workflows.session import Session


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


def evaluation_settings(config: RunConfig) -> EvaluationSettings:
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
                evaluation_settings(session.config),
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
    evaluation: Evaluation


@dataclass
class RunOutcome:
    """What a run's workflow hands to its summary: the pick (``record`` is ``selection.json``'s
    full content, for the report's tables), its evaluation and verdict, and the weak-alignment
    additions where that workflow ran."""

    record: dict[str, Any]
    selection: SelectionSummary
    evaluation: Evaluation
    verdict: RunVerdict
    weak: WeakAlignmentRun | None = None


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
            evaluation_settings(session.config),
            session.panel,
        ).rows
    judged = judged_evaluation(rows, session.panel)
    evaluation = Evaluation(
        judged.sets,
        judged.judge,
        judged.judges,
        judged.judge_settings,
        judged.degenerate,
        {label: interventions[label].describe() for label in test_sets(session)},
        coherence(session.adapter, session.chat, baselines.runs["harmless"], remove),
    )
    return EvaluationResult(rows, evaluation)


def evaluation_stage(
    session: Session, run_dir: RunDirectory, record: dict[str, Any], resuming: bool
) -> EvaluationResult:
    """The evaluation block and its completion rows; a resumed run whose evaluation finished
    (``evaluation.json``, written after ``completions.jsonl``) reuses them instead of generating
    every completion again."""
    path, completions = run_dir.file("evaluation.json"), run_dir.file("completions.jsonl")
    if resuming and path.exists() and completions.exists():
        return EvaluationResult(read_jsonl(completions), Evaluation.from_dict(read_json(path)))
    result = evaluate(session, record, baseline_runs(session))
    write_jsonl(completions, result.rows)
    write_json(path, result.evaluation.to_dict())
    return result
