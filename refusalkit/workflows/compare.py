"""``refusalkit compare``: the selection methods of the COSMIC paper's table on the same candidates
and splits."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from refusalkit.config import STEERINGS, RunConfig, Selector, Steering
from refusalkit.evaluation.verdict import run_verdict
from refusalkit.io import (
    write_jsonl,
    write_text,
)
from refusalkit.report.markdown import render_comparison
from refusalkit.runs.stages import finish
from refusalkit.selection.filters import NothingSelected
from refusalkit.workflows.evaluate import baseline_runs, evaluate
from refusalkit.workflows.inputs import adversarial_record
from refusalkit.workflows.selectors import save_direction, selection_stage
from refusalkit.workflows.session import open_session, start_run

# compare: the four methods of the COSMIC paper's table (the substring variant is run on request).
METHODS: tuple[tuple[Selector, Steering], ...] = tuple(
    (selector, steering) for selector in ("cosmic", "refusal-score") for steering in STEERINGS
)


def compare(config: RunConfig, out: Path, *, force: bool = False) -> dict[str, Any]:
    """COSMIC and refusal-score selection, each with LCE and ACE, on the same candidates and
    splits; one table (``comparison.json``, ``comparison.md``)."""
    started = time.time()
    run_dir, resolved, inputs, resuming = start_run(config, out, force, "compare")
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
                    record = selection_stage(
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
            finish(run_dir, "comparison.json", comparison)
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
