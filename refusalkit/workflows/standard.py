"""``refusalkit run``: prompts → candidates → selection (COSMIC by default) → evaluation → run
directory."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from refusalkit.config import (
    RunConfig,
)
from refusalkit.evaluation.verdict import run_verdict
from refusalkit.io import (
    read_json,
    write_json,
    write_text,
)
from refusalkit.report.markdown import render_report
from refusalkit.runs import RunDirectory
from refusalkit.runs.provenance import config_digest
from refusalkit.runs.stages import finish
from refusalkit.selection.stability import per_prompt_activations, pick_stability
from refusalkit.workflows.evaluate import evaluation_stage
from refusalkit.workflows.inputs import adversarial_record
from refusalkit.workflows.selectors import save_direction, selection_stage, summary_selection
from refusalkit.workflows.session import Session, cosmic_settings, open_session, start_run
from refusalkit.workflows.weak_alignment import weak_alignment


def run(config: RunConfig, out: Path, *, force: bool = False) -> dict[str, Any]:
    """Run the whole pipeline (COSMIC by default) and return ``summary.json``'s content."""
    started = time.time()
    run_dir, resolved, inputs, resuming = start_run(config, out, force, "run")
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
                record = selection_stage(
                    session, run_dir, "selection.json", config.selector, config.steering, resuming
                )
                save_direction(run_dir.file("direction.safetensors"), session, record)
                selection = summary_selection(record)
                if config.stability:
                    stage = "stability"
                    run_dir.status(stage, "running")
                    selection["stability"] = _stability_stage(session, run_dir, record, resuming)
                stage = "evaluation"
                run_dir.status(stage, "running")
                block, rows = evaluation_stage(session, run_dir, record, resuming)
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
                "config_sha256": config_digest(config.as_dict()),
                "seconds": round(time.time() - started, 1),
            }
            stage = "report"
            run_dir.status(stage, "running")
            write_text(
                run_dir.file("report.md"), render_report(summary, session.provenance, record)
            )
            finish(run_dir, "summary.json", summary)
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
