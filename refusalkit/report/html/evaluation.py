"""The evaluation on a run page: the refusal rates, then the judges, side effects and
per-category rates behind them."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from refusalkit.evaluation.metrics import Rate
from refusalkit.report import svg
from refusalkit.report.html.elements import (
    as_text,
    img,
    interval,
    kv,
    number,
    rate_text,
    table,
    td,
)
from refusalkit.report.svg import escape_text as _e
from refusalkit.runs.records import (
    Coherence,
    Evaluation,
    SetEvaluation,
)


def _degenerate_rate(evaluation: Evaluation, rows: list[dict[str, Any]]) -> Rate:
    """Degenerate outputs over all intervention completions, as the pipeline counts them; counted
    from the completions where the summary does not record them."""
    if evaluation.degenerate is not None:
        return evaluation.degenerate
    intervened = [r for r in rows if r.get("condition") == "intervention"]
    return Rate(sum(bool(r.get("degenerate")) for r in intervened), len(intervened))


def rates_section(evaluation: Evaluation | None, rows: list[dict[str, Any]]) -> str:
    if evaluation is None or not evaluation.sets:
        return '<h2 id="rates">Refusal rates</h2><p class="note">No evaluation recorded.</p>'
    sets = list(evaluation.sets.items())
    with_degenerate = any(block.degenerate is not None for _, block in sets)
    headers = ["test set", "intervention", "n", "baseline refusal", "refusal with intervention"]
    table_rows = []
    for name, block in sets:
        cells = [
            td(_e(name)),
            td(_e(evaluation.interventions.get(name, "–"))),
            td(number(block.n), num=True),
            td(rate_text(block.baseline), num=True),
            td(rate_text(block.intervention), num=True),
        ]
        if with_degenerate:
            degenerate = block.degenerate.intervention.rate if block.degenerate else None
            cells.append(td(rate_text(degenerate), num=True))
        table_rows.append(cells)
    if with_degenerate:
        headers.append("degenerate with intervention")
    chart = svg.bar_chart(
        [name for name, _ in sets],
        ["baseline", "with intervention"],
        [[interval(b.baseline), interval(b.intervention)] for _, b in sets],
        title="Refusal rate by test set",
        y_label="refusal rate",
    )
    alt = "Bar chart of baseline and intervention refusal rates per test set with 95% intervals"
    notes = [f"Judge: <code>{_e(evaluation.judge)}</code>."]
    harmful = evaluation.sets.get("harmful")
    if harmful is not None and harmful.compliance is not None:
        success = rate_text(harmful.compliance)
        notes.append(f"Attack success (harmful, neither refused nor degenerate): {success}.")
    notes.append(
        "Degenerate outputs under intervention (flagged, not counted as jailbreaks): "
        f"{rate_text(_degenerate_rate(evaluation, rows))}."
    )
    return (
        '<h2 id="rates">Refusal rates</h2>'
        + f"<p>{' '.join(notes)}</p>"
        + table(headers, table_rows)
        + f'<div class="plots">{img(chart, alt)}</div>'
    )


def details_section(evaluation: Evaluation | None) -> str:
    """Judges, side effects and per-category rates: what backs up the headline rates."""
    if evaluation is None:
        return ""
    settings = evaluation.judge_settings
    body = (
        _judges_table(evaluation)
        + (
            f"<details><summary>Judge settings</summary>{kv(settings)}</details>"
            if settings
            else ""
        )
        + _coherence(evaluation.coherence)
        + _per_category(evaluation.sets)
    )
    return '<h2 id="details">Judges, side effects and categories</h2>' + body if body else ""


def _judges_table(evaluation: Evaluation) -> str:
    rows = [
        [
            td(f"<code>{_e(name)}</code>"),
            td(_e(label)),
            td(rate_text(block.baseline), num=True),
            td(rate_text(block.intervention), num=True),
        ]
        for name, sets in evaluation.judges.items()
        for label, block in sets.items()
    ]
    if not rows:
        return ""
    headers = ["judge", "test set", "baseline refusal", "refusal with intervention"]
    return "<h3>All judges</h3>" + table(headers, rows)


def _per_category(sets: Mapping[str, SetEvaluation]) -> str:
    out = []
    for name, block in sets.items():
        if block.per_category:
            rows = [
                [
                    td(_e(category)),
                    td(number(rates.n), num=True),
                    td(rate_text(rates.baseline), num=True),
                    td(rate_text(rates.intervention), num=True),
                ]
                for category, rates in sorted(block.per_category.items())
            ]
            headers = ["category", "n", "baseline refusal", "refusal with intervention"]
            out.append(f"<div><h3>{_e(name)} by category</h3>" + table(headers, rows) + "</div>")
    return f'<div class="cols">{"".join(out)}</div>' if out else ""


def _coherence(coherence: Coherence) -> str:
    rows = [
        [td(f"<code>{_e(k)}</code>"), td(as_text(v) if isinstance(v, str) else number(v))]
        for k, v in coherence.to_dict().items()
    ]
    return "<h3>Coherence (side effects on harmless prompts)</h3>" + table(
        ["measure", "value"], rows
    )
