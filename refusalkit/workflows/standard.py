"""``refusalkit run``: prompts → candidates → selection (COSMIC by default) → evaluation → run
directory."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from refusalkit.config import (
    RunConfig,
)
from refusalkit.evaluation.verdict import judge_run
from refusalkit.io import (
    read_json,
    write_json,
    write_text,
)
from refusalkit.report.markdown import render_report
from refusalkit.runs import RunDirectory
from refusalkit.runs.provenance import config_digest
from refusalkit.runs.records import RunSummary, SelectionSummary, Stability
from refusalkit.runs.stages import Stages, finish, tracked
from refusalkit.selection.stability import per_prompt_activations, pick_stability
from refusalkit.workflows.evaluate import RunOutcome, evaluation_stage
from refusalkit.workflows.inputs import adversarial_record
from refusalkit.workflows.selectors import save_direction, selection_stage
from refusalkit.workflows.session import Session, cosmic_settings, open_session, start_run
from refusalkit.workflows.weak_alignment import weak_alignment


def run(config: RunConfig, out: Path, *, force: bool = False) -> RunSummary:
    """Run the whole workflow (COSMIC by default) into ``out``; returns ``summary.json``'s
    record."""
    started = time.time()
    run_dir, resolved, inputs, resuming = start_run(config, out, force, "run")
    with tracked(run_dir) as stages:
        session = open_session(config, run_dir, resolved, inputs, resuming)
        if config.weak_alignment != "none":
            stages.enter("weak-alignment")
            outcome = weak_alignment(session, run_dir, resuming)
        else:
            outcome = _select_and_evaluate(session, run_dir, stages, resuming)
        summary = RunSummary(
            model=config.model,
            verdict=outcome.verdict,
            selection=outcome.selection,
            evaluation=outcome.evaluation,
            weak=outcome.weak,
            adversarial=adversarial_record(config),
            config_sha256=config_digest(config.as_dict()),
            seconds=round(time.time() - started, 1),
        )
        stages.enter("report")
        write_text(
            run_dir.file("report.md"), render_report(summary, session.provenance, outcome.record)
        )
        finish(run_dir, "summary.json", summary.to_dict())
        return summary


def _select_and_evaluate(
    session: Session, run_dir: RunDirectory, stages: Stages, resuming: bool
) -> RunOutcome:
    """The standard run: select, save the direction, (``--stability``) resample, evaluate."""
    config = session.config
    stages.enter("selection")
    record = selection_stage(
        session, run_dir, "selection.json", config.selector, config.steering, resuming
    )
    save_direction(run_dir.file("direction.safetensors"), session, record)
    selection = SelectionSummary.from_dict(record)
    if config.stability:
        stages.enter("stability")
        stability = _stability_stage(session, run_dir, record, resuming)
        selection = replace(selection, stability=Stability.from_dict(stability))
    stages.enter("evaluation")
    result = evaluation_stage(session, run_dir, record, resuming)
    return RunOutcome(record, selection, result.evaluation, judge_run(result.rows))


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
                final_norm=config.l_low_convention == "reference",
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
