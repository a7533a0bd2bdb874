"""The report page of a ``refusalkit compare`` directory."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from refusalkit.evaluation.metrics import Rate
from refusalkit.report import svg
from refusalkit.report.html.elements import (
    as_dict,
    facts_block,
    img,
    interval,
    load_json,
    load_jsonl,
    number,
    pending_or_file,
    rate_text,
    table,
    td,
    token_html,
)
from refusalkit.report.html.page import page
from refusalkit.report.html.provenance import adversarial_facts, provenance_section
from refusalkit.report.html.samples import samples
from refusalkit.report.html.selection import pick_facts, selected_pick, selection_plots
from refusalkit.report.svg import escape_text as _e
from refusalkit.runs.records import (
    Comparison,
    ComparisonRow,
    FailedMethod,
    SelectionSummary,
)

# Compare table columns beyond the pick, each shown where some row has its test set:
# (header, the test set, the rate in a row).
_COMPARE_RATES: tuple[tuple[str, str, Callable[[ComparisonRow], Rate | None]], ...] = (
    ("harmful refusal with removal", "harmful", lambda r: _set_rate(r, "harmful")),
    ("attack success", "harmful", lambda r: r.compliance),
    ("harmless refusal with addition", "harmless", lambda r: _set_rate(r, "harmless")),
    ("over-refusal with removal", "over_refusal", lambda r: _set_rate(r, "over_refusal")),
)
_COMPARE_NUMBERS: tuple[tuple[str, Callable[[ComparisonRow], float]], ...] = (
    ("KL test", lambda r: r.test_kl),
    ("ΔCE (nats/token)", lambda r: r.cross_entropy_increase),
)
_SETS = (("harmful", "harmful refusal"), ("harmless", "harmless refusal"),
         ("over_refusal", "over-refusal"))  # fmt: skip


def _set_rate(row: ComparisonRow, label: str, condition: str = "intervention") -> Rate | None:
    block = row.sets.get(label)
    if block is None:
        return None
    return block.baseline if condition == "baseline" else block.intervention


def _row_pick(row: ComparisonRow) -> SelectionSummary:
    """A method's pick from its comparison row, where its selection file is missing."""
    return SelectionSummary(row.selector, row.steering, row.position, row.layer, row.kl,
                            row.score, None, None, None, {}, None, None)  # fmt: skip


@dataclass(frozen=True)
class _Columns:
    """The columns of the two tables (picks and rates, so each fits the page width), only for
    what some row recorded: a run without over-refusal prompts has none."""

    rates: list[tuple[str, str, Callable[[ComparisonRow], Rate | None]]]
    numbers: list[tuple[str, Callable[[ComparisonRow], float]]]
    sets: list[tuple[str, str]]  # (test set, its label) of the bar chart

    @property
    def pick_headers(self) -> list[str]:
        numbers = [h for h, _ in self.numbers]
        return ["method", "position", "layer", "score", "KL val", *numbers, "selection time"]

    @property
    def rate_headers(self) -> list[str]:
        return ["method", *(h for h, _, _ in self.rates), "degenerate"]


def _columns(selected: list[ComparisonRow]) -> _Columns:
    evaluated = {label for row in selected for label in row.sets}
    return _Columns(
        [c for c in _COMPARE_RATES if c[1] in evaluated],
        list(_COMPARE_NUMBERS) if selected else [],
        [s for s in _SETS if s[0] in evaluated],
    )


@dataclass(frozen=True)
class _MethodParts:
    """What one method adds to the page: a row of each table, its bars and its own section."""

    pick_row: list[str]
    rate_row: list[str]
    section: str  # "" for a failed method without a selection file
    bars: list[Rate | None] | None  # None: nothing selected, no bars


def _failed_method(
    row: FailedMethod, selection: dict[str, Any], tokens: Sequence[Any], columns: _Columns
) -> _MethodParts:
    method = _e(row.name)
    error = f"no selection: {_e(row.error)}"
    first = td(_method_link(method) if selection else f"<code>{method}</code>")
    section = ""
    if selection:  # a failed selection still has every candidate's scores to look at
        section = (
            f'<h2 id="method-{method}">{method}</h2><p class="error">{error}</p>'
            + selection_plots(selection, tokens)
        )
    return _MethodParts(
        [first, f'<td colspan="{len(columns.pick_headers) - 1}" class="error">{error}</td>'],
        [first, f'<td colspan="{len(columns.rate_headers) - 1}">–</td>'],
        section,
        None,
    )


def _selected_method(
    run_dir: Path,
    row: ComparisonRow,
    selection: dict[str, Any],
    tokens: Sequence[Any],
    columns: _Columns,
) -> _MethodParts:
    method = _e(row.name)
    link = td(_method_link(method))
    token = ""
    if -len(tokens) <= row.position < 0:
        token = token_html(tokens[len(tokens) + row.position])
    pick_row = [
        link,
        td(f"{number(row.position)}&nbsp;<code>{token}</code>"),
        td(number(row.layer), num=True),
        td(number(row.score), num=True),
        td(number(row.kl), num=True),
        *(td(number(value(row)), num=True) for _, value in columns.numbers),
        td(f"{number(row.selection_seconds, 1)} s", num=True),
    ]
    rate_row = [
        link,
        *(td(rate_text(rate(row)), rate=True) for _, _, rate in columns.rates),
        td(rate_text(row.degenerate), rate=True),
    ]
    pick = selected_pick(selection) or _row_pick(row)
    section = (
        f'<h2 id="method-{method}">{method}</h2>'
        + facts_block(pick_facts(pick, selection.get("l_low"), tokens))
        + selection_plots(selection, tokens)
        + f"<details><summary>Sample completions ({method})</summary>"
        + samples(load_jsonl(run_dir / f"completions-{row.name}.jsonl"))
        + "</details>"
    )
    bars = [_set_rate(row, s) for s, _ in columns.sets]
    return _MethodParts(pick_row, rate_row, section, bars)


def _method_link(method: str) -> str:
    return f'<a href="#method-{method}"><code>{method}</code></a>'


def _method_parts(
    run_dir: Path, row: ComparisonRow | FailedMethod, tokens: Sequence[Any], columns: _Columns
) -> _MethodParts:
    selection = as_dict(load_json(run_dir / f"selection-{row.name}.json"))
    if isinstance(row, FailedMethod):
        return _failed_method(row, selection, tokens, columns)
    return _selected_method(run_dir, row, selection, tokens, columns)


def _baselines(selected: list[ComparisonRow], columns: _Columns) -> list[Rate | None]:
    """Baseline completions are generated once and shared by every method: one baseline group."""
    return [_set_rate(selected[0], s, "baseline") for s, _ in columns.sets] if selected else []


def _rates_chart(comparison: Comparison, columns: _Columns, parts: list[_MethodParts]) -> str:
    if not columns.sets:
        return ""
    plotted = [(row.name, p.bars) for row, p in zip(comparison.rows, parts, strict=True)]
    groups = [(name, bars) for name, bars in plotted if bars is not None]
    baselines = _baselines(comparison.selected, columns)
    chart = svg.bar_chart(
        ["no intervention", *(group for group, _ in groups)],
        [label for _, label in columns.sets],
        [[interval(r) for r in rates] for rates in (baselines, *(rates for _, rates in groups))],
        title="Refusal rate per method (interventions as in the table)",
        y_label="refusal rate",
    )
    alt = "Bar chart of refusal rates per method with 95% intervals"
    return f'<div class="plots">{img(chart, alt)}</div>'


def _baseline_note(selected: list[ComparisonRow], columns: _Columns) -> str:
    if not selected:
        return ""
    baselines = _baselines(selected, columns)
    text = ", ".join(
        f"{label} {rate_text(r)}" for (_, label), r in zip(columns.sets, baselines, strict=True)
    )
    return f"<p>Baselines (no intervention, shared by all methods): {text}.</p>"


def _verdict(comparison: Comparison) -> str:
    working = comparison.working_methods
    if working:
        return '<p class="statement">Working directions from: ' + _e(", ".join(working)) + "</p>"
    return (
        '<p class="statement finding"><b>No working direction</b> from any method: no '
        "selected direction removed or induced refusal on the test prompts (verdicts per method in "
        "comparison.json).</p>"
    )


def _compare_facts(comparison: Comparison, status: Mapping[str, Any]) -> list[tuple[str, str]]:
    return [
        ("model", f"<code>{_e(comparison.model)}</code>"),
        ("judge", f"<code>{_e(comparison.judge)}</code>"),
        ("methods", f"{len(comparison.selected)} selected of {len(comparison.rows)}"),
        *adversarial_facts(comparison.adversarial),
        ("run time", f"{number(comparison.seconds, 1)} s"),
        ("state", _e(f"{status.get('state', '?')} ({status.get('stage', '?')})")),
    ]


def compare_page(run_dir: Path, pending: Mapping[str, Any]) -> str:
    comparison = Comparison.from_dict(pending_or_file(run_dir, "comparison.json", pending))
    provenance = as_dict(load_json(run_dir / "provenance.json"))
    status = as_dict(pending_or_file(run_dir, "status.json", pending))
    tokens = list(as_dict(provenance.get("chat")).get("post_instruction_tokens") or [])
    columns = _columns(comparison.selected)
    parts = [_method_parts(run_dir, row, tokens, columns) for row in comparison.rows]
    pick_table = table(columns.pick_headers, [p.pick_row for p in parts])
    rate_table = table(columns.rate_headers, [p.rate_row for p in parts], "compact")
    body = (
        "<h1>refusalkit compare report</h1>"
        + _verdict(comparison)
        + facts_block(_compare_facts(comparison, status))
        + '<h2 id="comparison">Comparison</h2>'
        + _baseline_note(comparison.selected, columns)
        + f'<h3>Picks</h3><div class="wide">{pick_table}</div>'
        + f'<h3>Rates under intervention</h3><div class="wide">{rate_table}</div>'
        + _rates_chart(comparison, columns, parts)
        + "".join(p.section for p in parts)
        + provenance_section(
            run_dir,
            load_json(run_dir / "config.json"),
            provenance,
            load_json(run_dir / "splits.json"),
        )
    )
    return page(f"refusalkit compare — {comparison.model}", body)
