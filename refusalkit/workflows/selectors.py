"""The selection stage: the selectors' registry (COSMIC, refusal score, refusal substring), their
``selection.json`` records, and the direction file."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from refusalkit.api import Direction, run_cosmic
from refusalkit.config import RunConfig, Selector, Steering
from refusalkit.io import (
    read_json,
    write_json,
)
from refusalkit.runs import RunDirectory
from refusalkit.selection.diagnostics import selection_diagnostics
from refusalkit.selection.engine import RefusalScoreEngine, WorkCounter
from refusalkit.selection.filters import NothingSelected
from refusalkit.selection.refusal_score import (
    RefusalScoreOutcome,
    RefusalScoreSettings,
    refusal_tokens,
)
from refusalkit.selection.substring_score import SubstringScoreEngine, rate_threshold
from refusalkit.workflows.session import Session, cosmic_settings

# Tokens generated per validation prompt and candidate by the substring variant: enough for the
# opening phrase a refusal starts with ("I'm sorry, but I can't"), short enough to stay affordable.
SUBSTRING_SELECTION_TOKENS = 8


def _cosmic_record(session: Session, steering: Steering) -> dict[str, Any]:
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
        # A value, not prose: "block-input" (SPEC §0) or "reference" (block outputs, the last one
        # after the final norm); the residual points are where the scores were read.
        "l_low_convention": pick.settings.l_low_convention,
        "l_low_points": pick.settings.reading_points(layers.layers),
        "layer_similarities": list(layers.similarities),
        "median_peak_layers": pick.outcome.median_layers,
        "settings": asdict(pick.settings),
        "work": work_record(pick.work),
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


def _refusal_score_record(session: Session, steering: Steering) -> dict[str, Any]:
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
        "work": work_record(engine.work),
    }
    return _output_based_record("refusal-score", steering, outcome, settings, extra)


def _refusal_substring_record(session: Session, steering: Steering) -> dict[str, Any]:
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


def work_record(counter: WorkCounter) -> dict[str, Any]:
    """Machine-independent cost of a selection (block-forwards = prompts × decoder blocks run)."""
    return {
        "block_forwards": counter.block_forwards,
        "prompt_forwards": counter.prompt_forwards,
        "block_forwards_per_kind": counter.per_kind,
    }


def _nan_last(value: float) -> float:
    return math.inf if math.isnan(value) else value


# The selectors by name (``RunConfig.selector``): each returns its ``selection.json`` record. A new
# selector is one record function and one entry here (and its name in ``config.Selector``).
SELECTOR_RECORDS: dict[str, Callable[[Session, Steering], dict[str, Any]]] = {
    "cosmic": _cosmic_record,
    "refusal-score": _refusal_score_record,
    "refusal-substring": _refusal_substring_record,
}


def select_direction(session: Session, selector: Selector, steering: Steering) -> dict[str, Any]:
    """Run one selector and return its full ``selection.json`` record."""
    started = time.time()
    record = SELECTOR_RECORDS[selector](session, steering)
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


def selection_stage(
    session: Session,
    run_dir: RunDirectory,
    name: str,
    selector: Selector,
    steering: Steering,
    resuming: bool,
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
