"""The report page of a ``refusalkit run`` directory."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from refusalkit.report.html.elements import (
    as_dict,
    facts_block,
    load_json,
    load_jsonl,
    number,
    pending_or_file,
)
from refusalkit.report.html.evaluation import details_section, rates_section
from refusalkit.report.html.page import page
from refusalkit.report.html.provenance import adversarial_facts, provenance_section
from refusalkit.report.html.samples import samples
from refusalkit.report.html.selection import pick_facts, selected_pick, selection_plots
from refusalkit.report.html.sweep import sweep_section
from refusalkit.report.svg import escape_text as _e
from refusalkit.runs.records import (
    RunSummary,
    RunVerdict,
    SelectionSummary,
    WeakAlignmentRun,
)


def _verdict_banner(verdict: RunVerdict, warning: str | None) -> str:
    """The effect verdict first: a failed selection is the first thing a reader sees."""
    judged = verdict.effects()
    shown = ", ".join(f"{kind}: <b>{_e(effect)}</b>" for kind, effect in judged)
    head = "Verdict" if verdict.works else "Verdict — no working direction"
    note = f"<br><b>Selection warning:</b> {_e(warning)}" if warning else ""
    # Highlighted unless every judged effect works (or a selection warning stands).
    fully = all(effect == "works" for _, effect in judged)
    style = "statement" if fully and not warning else "statement finding"
    return (
        f'<p class="{style}" id="verdict"><b>{head}</b> ({shown})<br>{_e(verdict.reason)}{note}</p>'
    )


def run_page(run_dir: Path, pending: Mapping[str, Any]) -> str:
    written = pending_or_file(run_dir, "summary.json", pending)
    summary = RunSummary.from_dict(written) if written is not None else None
    selection = as_dict(load_json(run_dir / "selection.json"))  # its candidates are plotted
    provenance = as_dict(load_json(run_dir / "provenance.json"))
    status = as_dict(pending_or_file(run_dir, "status.json", pending))
    rows = load_jsonl(run_dir / "completions.jsonl")
    tokens = list(as_dict(provenance.get("chat")).get("post_instruction_tokens") or [])
    tokens = list(selection.get("position_tokens") or tokens)
    model = (summary.model if summary else None) or as_dict(provenance.get("model")).get("spec")
    model = model or "?"
    pick = summary.selection if summary is not None else selected_pick(selection)
    weak = _swept(summary)
    facts = [
        ("model", f"<code>{_e(str(model))}</code>"),
        *_selection_facts(pick, summary, selection.get("l_low"), tokens),
        *_weak_facts(weak),
        *adversarial_facts(summary.adversarial if summary else None),
        *_run_facts(summary, status),
    ]
    warning = pick.diagnostics.warning if pick and pick.diagnostics else None
    evaluation = summary.evaluation if summary else None
    body = (
        "<h1>refusalkit run report</h1>"
        + (_verdict_banner(summary.verdict, warning) if summary else "")
        + facts_block(facts)
        + (sweep_section(summary, weak, rows, run_dir, tokens) if summary and weak else "")
        + rates_section(evaluation, rows)
        + '<h2 id="selection">Selection</h2>'
        + selection_plots(selection, tokens)
        + details_section(evaluation)
        + '<h2 id="samples">Sample completions</h2>'
        + samples(rows)
        + provenance_section(
            run_dir,
            load_json(run_dir / "config.json"),
            provenance,
            load_json(run_dir / "splits.json"),
        )
    )
    return page(f"refusalkit run — {model}", body)


def _swept(summary: RunSummary | None) -> WeakAlignmentRun | None:
    """The weak-alignment part of a run that swept α; none for any other run."""
    if summary is None or summary.weak is None or not summary.weak.alpha_sweep:
        return None
    return summary.weak


def _selection_facts(
    pick: SelectionSummary | None, summary: RunSummary | None, l_low: Any, tokens: Sequence[Any]
) -> list[tuple[str, str]]:
    """The pick, its rank by score and (from the summary) how stable it is."""
    if pick is None:
        return []
    facts = pick_facts(pick, l_low, tokens)
    diagnostics = pick.diagnostics
    if diagnostics is not None:
        facts.append(("rank by score", f"{number(diagnostics.rank)} of "
                      f"{number(diagnostics.n_scored)} scored candidates"))  # fmt: skip
    stability = summary.selection.stability if summary else None
    if stability is not None:
        wins = ", ".join(
            f"{number(w.position)}/{number(w.layer)}: {number(w.count)}" for w in stability.wins
        )
        facts.append(("pick stability", _e(
            f"won {number(stability.pick_share, 2)} of {number(stability.resamples)} "
            f"bootstrap resamples of the train prompts (position/layer: wins — {wins})"
        )))  # fmt: skip
    return facts


def _weak_facts(weak: WeakAlignmentRun | None) -> list[tuple[str, str]]:
    if weak is None:
        return []
    mode = _e(weak.weak_alignment.mode)
    return [("weak alignment", f'{mode}: <a href="#sweep">steering toward refusal</a>')]


def _run_facts(summary: RunSummary | None, status: Mapping[str, Any]) -> list[tuple[str, str]]:
    facts = [
        ("run time", f"{number(summary.seconds if summary else None, 1)} s"),
        ("state", _e(f"{status.get('state', '?')} ({status.get('stage', '?')})")),
    ]
    if summary is None:
        facts.append(("note", '<span class="error">no summary.json: the run did not finish</span>'))
    return facts
