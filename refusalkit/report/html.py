"""One self-contained HTML page for a ``refusalkit run`` or ``refusalkit compare`` directory.

The page must open offline and be safe to mail around: CSS inline, every plot an SVG data URI,
no external URL, every piece of prompt/completion text escaped, and a Content-Security-Policy that
forbids loading anything but data: images, so a stray URL could not be fetched even if one slipped
in. ``summary.json`` and ``comparison.json`` are read once into their records
(:mod:`refusalkit.runs.records`) and rendered from typed fields; the other run files (selection
scores, provenance, configuration, completions) are shown as far as they are present.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeGuard

from refusalkit.errors import RefusalkitError
from refusalkit.evaluation.metrics import Rate
from refusalkit.io import read_json, read_jsonl, write_text
from refusalkit.report import svg
from refusalkit.report.svg import escape_text as _e
from refusalkit.runs.records import (
    Adversarial,
    Coherence,
    Comparison,
    ComparisonRow,
    Evaluation,
    FailedMethod,
    RunSummary,
    RunVerdict,
    SelectionSummary,
    SetEvaluation,
    Stage1,
    WeakAlignmentRun,
)

# Candidate statuses that mean "removed by a filter" (hatched in the heatmaps).
_FILTERED = frozenset({"median_peak", "zero", "layer", "nan", "induce", "kl"})
# Per-candidate metrics to plot, with titles saying which direction is good.
# (key, title, higher is better)
_COSMIC_METRICS = (
    ("s_refuse", "S_refuse (higher: addition makes harmless look harmful)", True),
    ("s_comply", "S_comply (higher: ablation makes harmful look harmless)", True),
    ("kl", "KL on harmless prompts (lower: fewer side effects)", False),
    ("score", "score = S_refuse + S_comply (selected: argmax)", True),
)
_REFUSAL_SCORE_METRICS = (
    ("bypass", "bypass: refusal score under ablation (lower is better)", False),
    ("induce", "induce: refusal score under addition (higher is better)", True),
    ("kl", "KL on harmless prompts (lower: fewer side effects)", False),
)
# completions.jsonl keys shown as columns or badges of their own, or not verdicts at all; any
# other bool/number key (e.g. refusal_log_odds) is shown as a judge verdict.
_ROW_KEYS = frozenset(
    {"set", "condition", "intervention", "category", "prompt", "completion", "refusal"}
    | {"degenerate", "degenerate_reason", "judges", "n_tokens", "alpha"}
)
_SAMPLES_PER_SET = 4

# Sets a data attribute on <body> once everything has loaded, so a headless browser (or a person
# with devtools) can check that every image decoded and no script error happened.
_SCRIPT = (
    "(function(){var errors=0;window.onerror=function(){errors+=1;"
    "document.body.dataset.errors=errors;};window.addEventListener('load',function(){"
    "var imgs=document.images,ok=0;for(var i=0;i<imgs.length;i++){"
    "if(imgs[i].complete&&imgs[i].naturalWidth>0){ok+=1;}}var d=document.body.dataset;"
    "d.imagesLoaded=ok;d.imagesTotal=imgs.length;d.errors=errors;});})();"
)
# The CSP allows exactly this script (by hash), inline styles and data: images; nothing else.
_CSP = (
    "default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'sha256-"
    + base64.b64encode(hashlib.sha256(_SCRIPT.encode()).digest()).decode()
    + "'"
)
_CSS = """
body { font-family: system-ui, "DejaVu Sans", sans-serif; margin: 0; color: #1b1b1b;
  background: #fafafa; line-height: 1.45; }
main { max-width: 1240px; margin: 0 auto; padding: 20px 28px 60px; }
h1 { font-size: 1.6em; margin: .2em 0; }
h2 { border-bottom: 2px solid #ddd; padding-bottom: 4px; margin-top: 1.8em; }
h3 { margin: 1.2em 0 .4em; }
code, .completion { font-family: "DejaVu Sans Mono", Menlo, Consolas, monospace; }
code { font-size: .92em; }
table { border-collapse: collapse; margin: .5em 0 1em; background: #fff; }
th, td { border: 1px solid #d4d4d4; padding: 4px 8px; text-align: left; vertical-align: top; }
th { background: #f0f0f0; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
td code { white-space: nowrap; }
.compact td.rate { white-space: normal; }
.ci { white-space: nowrap; }
.kv td:last-child { white-space: pre-wrap; word-break: break-word; max-width: 640px; }
.wide { overflow-x: auto; }
.facts { display: grid; grid-template-columns: max-content 1fr; gap: 2px 14px; width: fit-content;
  background: #fff; border: 1px solid #ddd; padding: 10px 14px; }
.facts dt { font-weight: 600; color: #444; }
.facts dd { margin: 0; }
.plots { display: flex; flex-wrap: wrap; gap: 14px; align-items: flex-start; }
.plots img { max-width: 100%; height: auto; border: 1px solid #e2e2e2; background: #fff; }
.cols { display: flex; flex-wrap: wrap; gap: 0 28px; align-items: flex-start; }
.completion { font-size: .85em; white-space: pre-wrap; word-break: break-word; max-height: 14em;
  overflow: auto; background: #f6f6f6; padding: 4px 6px; margin: 2px 0; }
.samples td { max-width: 420px; }
.badge { display: inline-block; border-radius: 3px; padding: 0 5px; margin: 1px 3px 1px 0;
  font-size: .8em; border: 1px solid #bbb; background: #fff; }
.badge.yes { background: #fde2e1; border-color: #e59a96; }
.badge.no { background: #e3f4e1; border-color: #92c78c; }
.badge.warn { background: #fff2cc; border-color: #d6b656; }
.error { color: #a40000; }
.statement { font-size: 1.1em; background: #eaf2fb; border-left: 5px solid #4c78a8;
  padding: 8px 12px; max-width: 1000px; }
.statement.finding { background: #fff2cc; border-color: #d6b656; }
.note { color: #555; font-size: .92em; }
details { margin: .5em 0; }
summary { cursor: pointer; }
"""


# ---------------------------------------------------------------------------------------------
# small helpers


def _load_json(path: Path) -> Any:
    return read_json(path) if path.is_file() else None


def _load_jsonl(path: Path) -> list[dict[str, Any]]:
    return read_jsonl(path) if path.is_file() else []


def _dict(x: Any) -> dict[str, Any]:
    """``x`` if it is a dict, else an empty one: a missing or malformed block renders as absent."""
    return x if isinstance(x, dict) else {}


def _num(x: Any, digits: int = 4) -> str:
    if isinstance(x, bool) or not isinstance(x, int | float) or not math.isfinite(x):
        return "–"
    return str(x) if isinstance(x, int) else f"{x:.{digits}f}"


def _value(x: Any) -> str:
    """Any config/provenance value as escaped text; containers as compact JSON."""
    if x is None:
        return "–"
    if isinstance(x, str):
        return _e(x)
    if isinstance(x, float):
        return repr(x)  # shortest exact form: 0.1, not 0.100000
    return _e(json.dumps(x, ensure_ascii=False))


def _token(token: Any) -> str:
    """A token made visible: repr shows newlines and spaces, which are most of the P tokens."""
    return _e(repr(token)) if isinstance(token, str) else "?"


def _table(headers: Sequence[str], rows: Iterable[Sequence[str]], cls: str = "") -> str:
    """Headers are trusted literals; cells must already be escaped HTML."""
    head = "".join(f"<th>{h}</th>" for h in headers)
    body = "".join("<tr>" + "".join(cells) + "</tr>" for cells in rows)
    return f'<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _td(html: str, num: bool = False, rate: bool = False) -> str:
    if rate:  # a narrow rate cell may wrap only before the interval, never inside it
        html = html.replace(", 95% CI ", ', <span class="ci">95% CI ', 1)
        html += "</span>" if 'class="ci"' in html else ""
    cls = " ".join(c for c, on in (("num", num or rate), ("rate", rate)) if on)
    return f'<td class="{cls}">{html}</td>' if cls else f"<td>{html}</td>"


def _kv(mapping: Mapping[str, Any]) -> str:
    rows = [[_td(f"<code>{_e(str(k))}</code>"), _td(_value(v))] for k, v in mapping.items()]
    return _table(["key", "value"], rows, "kv") if rows else '<p class="note">not recorded</p>'


def _facts(items: Iterable[tuple[str, str]]) -> str:
    return '<dl class="facts">' + "".join(f"<dt>{k}</dt><dd>{v}</dd>" for k, v in items) + "</dl>"


def _img(chart: str, alt: str) -> str:
    return f'<img src="{svg.data_uri(chart)}" alt="{_e(alt)}">'


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "–"


# ---------------------------------------------------------------------------------------------
# rates: every rate is shown with its count and 95% interval


def _rate_text(rate: Rate | None) -> str:
    """A rate as text; "–" where there is none (nothing recorded, or nothing judged)."""
    return "–" if rate is None or rate.n == 0 else rate.describe()


def _bar(rate: Rate | None) -> svg.Interval:
    if rate is None or rate.n == 0:
        return (None, None, None)
    low, high = rate.ci95
    return (rate.value, low, high)


def _degenerate_rate(evaluation: Evaluation, rows: list[dict[str, Any]]) -> Rate:
    """Degenerate outputs over all intervention completions, as the pipeline counts them; counted
    from the completions where the summary does not record them."""
    if evaluation.degenerate is not None:
        return evaluation.degenerate
    intervened = [r for r in rows if r.get("condition") == "intervention"]
    return Rate(sum(bool(r.get("degenerate")) for r in intervened), len(intervened))


def _rates_section(evaluation: Evaluation | None, rows: list[dict[str, Any]]) -> str:
    if evaluation is None or not evaluation.sets:
        return '<h2 id="rates">Refusal rates</h2><p class="note">No evaluation recorded.</p>'
    sets = list(evaluation.sets.items())
    with_degenerate = any(block.degenerate is not None for _, block in sets)
    headers = ["test set", "intervention", "n", "baseline refusal", "refusal with intervention"]
    table_rows = []
    for name, block in sets:
        cells = [
            _td(_e(name)),
            _td(_e(evaluation.interventions.get(name, "–"))),
            _td(_num(block.n), num=True),
            _td(_rate_text(block.baseline), num=True),
            _td(_rate_text(block.intervention), num=True),
        ]
        if with_degenerate:
            degenerate = block.degenerate.intervention.rate if block.degenerate else None
            cells.append(_td(_rate_text(degenerate), num=True))
        table_rows.append(cells)
    if with_degenerate:
        headers.append("degenerate with intervention")
    chart = svg.bar_chart(
        [name for name, _ in sets],
        ["baseline", "with intervention"],
        [[_bar(b.baseline), _bar(b.intervention)] for _, b in sets],
        title="Refusal rate by test set",
        y_label="refusal rate",
    )
    alt = "Bar chart of baseline and intervention refusal rates per test set with 95% intervals"
    notes = [f"Judge: <code>{_e(evaluation.judge)}</code>."]
    harmful = evaluation.sets.get("harmful")
    if harmful is not None and harmful.compliance is not None:
        success = _rate_text(harmful.compliance)
        notes.append(f"Attack success (harmful, neither refused nor degenerate): {success}.")
    notes.append(
        "Degenerate outputs under intervention (flagged, not counted as jailbreaks): "
        f"{_rate_text(_degenerate_rate(evaluation, rows))}."
    )
    return (
        '<h2 id="rates">Refusal rates</h2>'
        + f"<p>{' '.join(notes)}</p>"
        + _table(headers, table_rows)
        + f'<div class="plots">{_img(chart, alt)}</div>'
    )


def _details_section(evaluation: Evaluation | None) -> str:
    """Judges, side effects and per-category rates: what backs up the headline rates."""
    if evaluation is None:
        return ""
    settings = evaluation.judge_settings
    body = (
        _judges_table(evaluation)
        + (
            f"<details><summary>Judge settings</summary>{_kv(settings)}</details>"
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
            _td(f"<code>{_e(name)}</code>"),
            _td(_e(label)),
            _td(_rate_text(block.baseline), num=True),
            _td(_rate_text(block.intervention), num=True),
        ]
        for name, sets in evaluation.judges.items()
        for label, block in sets.items()
    ]
    if not rows:
        return ""
    headers = ["judge", "test set", "baseline refusal", "refusal with intervention"]
    return "<h3>All judges</h3>" + _table(headers, rows)


def _per_category(sets: Mapping[str, SetEvaluation]) -> str:
    out = []
    for name, block in sets.items():
        if block.per_category:
            rows = [
                [
                    _td(_e(category)),
                    _td(_num(rates.n), num=True),
                    _td(_rate_text(rates.baseline), num=True),
                    _td(_rate_text(rates.intervention), num=True),
                ]
                for category, rates in sorted(block.per_category.items())
            ]
            headers = ["category", "n", "baseline refusal", "refusal with intervention"]
            out.append(f"<div><h3>{_e(name)} by category</h3>" + _table(headers, rows) + "</div>")
    return f'<div class="cols">{"".join(out)}</div>' if out else ""


def _coherence(coherence: Coherence) -> str:
    rows = [
        [_td(f"<code>{_e(k)}</code>"), _td(_value(v) if isinstance(v, str) else _num(v))]
        for k, v in coherence.to_dict().items()
    ]
    return "<h3>Coherence (side effects on harmless prompts)</h3>" + _table(
        ["measure", "value"], rows
    )


# ---------------------------------------------------------------------------------------------
# selection: L_low curve and position × layer heatmaps


def _selection_plots(selection: Mapping[str, Any], fallback_tokens: Sequence[Any]) -> str:
    candidates = [c for c in selection.get("candidates") or [] if isinstance(c, dict)]
    similarities = selection.get("layer_similarities") or []
    charts: list[str] = []
    if similarities:
        l_low = [int(l) for l in selection.get("l_low") or []]
        chart = svg.line_chart(
            [s if isinstance(s, int | float) else None for s in similarities],
            title="cos(mean harmful, mean harmless) at position -1, per layer",
            x_label="layer",
            y_label="cosine similarity",
            highlight=l_low,
            highlight_label=f"L_low (evaluation layers): {l_low}",
            marker=selection.get("layer"),
            marker_label=f"selected layer {selection.get('layer')}",
        )
        charts.append(_img(chart, f"Layer similarity curve; L_low layers {l_low} highlighted"))
    if candidates:
        tokens = list(selection.get("position_tokens") or fallback_tokens)
        positions = sorted({int(c["position"]) for c in candidates if "position" in c})
        n_layers = max([int(c.get("layer", 0)) + 1 for c in candidates] + [len(similarities)])
        rows = {p: i for i, p in enumerate(positions)}

        def token_of(p: int) -> str:
            # Positions are -P..-1 and position_tokens lists the tokens for -P..-1 in order.
            return repr(tokens[len(tokens) + p])[:18] if -len(tokens) <= p < 0 else ""

        labels = [f"{p} {token_of(p)}" for p in positions]
        position, layer = selection.get("position"), selection.get("layer")
        # No pick to mark when the selection failed (every candidate filtered out).
        pick: tuple[int, int] | None = None
        if isinstance(position, int) and position in rows and isinstance(layer, int):
            pick = (rows[position], layer)
        cells = [
            (rows[c["position"]], int(c.get("layer", -1)), c) for c in candidates if "position" in c
        ]
        filtered = [(i, j) for i, j, c in cells if c.get("status") in _FILTERED]
        # Which selector wrote the file, from the scores its candidates carry.
        metrics: tuple[tuple[str, str, bool], ...] = ()
        if any("s_comply" in c for c in candidates):
            metrics = _COSMIC_METRICS
        elif any("bypass" in c for c in candidates):
            metrics = _REFUSAL_SCORE_METRICS
        for key, title, higher_is_better in metrics:
            grid: list[list[float | None]] = [[None] * n_layers for _ in positions]
            for i, j, c in cells:
                value = c.get(key)
                if 0 <= j < n_layers and isinstance(value, int | float):
                    grid[i][j] = float(value)
            chart = svg.heatmap(
                grid, labels, [str(l) for l in range(n_layers)], title=title, pick=pick,
                filtered=filtered, higher_is_better=higher_is_better,
            )  # fmt: skip
            charts.append(_img(chart, f"Heatmap over position × layer of {title}"))
    if not charts:
        return '<p class="note">No per-candidate scores recorded.</p>'
    statuses: dict[str, int] = {}
    for c in candidates:
        statuses[str(c.get("status"))] = statuses.get(str(c.get("status")), 0) + 1
    counts = ", ".join(f"{_e(k)} {v}" for k, v in sorted(statuses.items()))
    return (
        f'<p class="note">Candidates by status: {counts}. Hatched cells were removed by a filter '
        "(median-peak, zero direction, layer, NaN, induce or KL); grey cells have no value (KL "
        "is only computed for candidates the lazy KL filter reached). Rows are post-instruction "
        "positions with their tokens.</p>" + '<div class="plots">' + "".join(charts) + "</div>"
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


def _pick_facts(pick: SelectionSummary, l_low: Any, tokens: Sequence[Any]) -> list[tuple[str, str]]:
    """The pick in facts; ``l_low``: the evaluation layers from ``selection.json``, if any."""
    token = ""
    if -len(tokens) <= pick.position < 0:
        token = f" (token <code>{_token(tokens[len(tokens) + pick.position])}</code>)"
    facts = [
        ("method", _e(f"{pick.method}-{pick.steering.upper()}")),
        ("pick", f"position {_num(pick.position)}{token}, layer {_num(pick.layer)}"),
        ("score", _num(pick.score)),
        ("KL", _num(pick.kl)),
        *((key, _num(value)) for key, value in pick.scores.items()),
    ]
    if pick.n_candidates is not None:
        facts.append(("kept by the filters", f"{_num(pick.n_kept)} of {_num(pick.n_candidates)}"))
    if l_low is not None:
        facts.append(("L_low", _value(l_low)))
    return facts


def _pick(record: Mapping[str, Any]) -> SelectionSummary | None:
    """The pick of a ``selection.json``-style file; none where the file is missing or records a
    selection that found nothing."""
    return SelectionSummary.from_dict(record) if record and "error" not in record else None


# ---------------------------------------------------------------------------------------------
# sample completions


def _verdicts(row: Mapping[str, Any]) -> str:
    badges = []
    if "refusal" in row:
        yes = bool(row["refusal"])
        badges.append(
            f'<span class="badge {"yes" if yes else "no"}">refusal: {"yes" if yes else "no"}</span>'
        )
    if row.get("degenerate"):
        reason = f": {_e(str(row['degenerate_reason']))}" if row.get("degenerate_reason") else ""
        badges.append(f'<span class="badge warn">degenerate{reason}</span>')
    verdicts = dict(_dict(row.get("judges")))
    verdicts.update({k: v for k, v in row.items() if k not in _ROW_KEYS})
    for name, verdict in verdicts.items():
        if isinstance(verdict, bool):
            text = "yes" if verdict else "no"
        elif isinstance(verdict, int | float):
            text = _num(verdict, 3)
        else:
            continue
        badges.append(f'<span class="badge">{_e(str(name))}: {text}</span>')
    return "".join(badges)


def _samples(rows: list[dict[str, Any]], per_set: int = _SAMPLES_PER_SET) -> str:
    """The first ``per_set`` prompts of each set: baseline and intervention side by side."""
    pairs: dict[tuple[str, str], dict[str, dict[str, Any]]] = {}
    for row in rows:
        key = (str(row.get("set", "?")), str(row.get("prompt", "")))
        pairs.setdefault(key, {}).setdefault(str(row.get("condition", "?")), row)
    out = []
    for name in dict.fromkeys(s for s, _ in pairs):
        table_rows: list[list[str]] = []
        for (s, prompt), by_condition in pairs.items():
            if s != name or len(table_rows) >= per_set:
                continue
            base, inter = by_condition.get("baseline", {}), by_condition.get("intervention", {})
            any_row = base or inter
            cells = [
                _td(f'<div class="completion">{_e(prompt)}</div><span class="note">'
                    f"{_e(str(any_row.get('category', '')))}</span>"),
            ]  # fmt: skip
            for row in (base, inter):
                cells.append(
                    _td(
                        f'<div class="completion">{_e(str(row.get("completion", "")))}</div>'
                        + _verdicts(row)
                        if row
                        else "–"
                    )
                )
            table_rows.append(cells)
        intervention = next(
            (
                str(r.get("intervention"))
                for r in rows
                if r.get("set") == name and r.get("condition") == "intervention"
            ),
            "–",
        )
        out.append(
            f"<h3>{_e(name)} <span class='note'>(intervention: {_e(intervention)})</span></h3>"
            + _table(["prompt (category)", "baseline", "with intervention"], table_rows, "samples")
        )
    return "".join(out) or '<p class="note">No completions recorded.</p>'


# ---------------------------------------------------------------------------------------------
# weakly aligned models: steering toward refusal over α


@dataclass(frozen=True)
class _SweepRow:
    alpha: float | None  # None: the model without steering
    harmful: Rate | None
    harmless: Rate | None
    degenerate: Rate | None


def _is_number(x: Any) -> TypeGuard[int | float]:
    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)


def _sweep_rows(evaluation: Evaluation, weak: WeakAlignmentRun) -> list[_SweepRow]:
    """The unsteered model first, then one row per α in increasing order."""
    unsteered = weak.weak_alignment.unsteered
    rows = [
        _SweepRow(
            None,
            unsteered.get("harmful"),
            unsteered.get("harmless"),
            _unsteered_degenerate(evaluation),
        )
    ]
    points = [p for p in weak.alpha_sweep if _is_number(p.alpha)]
    for p in sorted(points, key=lambda p: p.alpha):
        rows.append(_SweepRow(p.alpha, p.harmful, p.harmless, p.degenerate))
    return rows


def _unsteered_degenerate(evaluation: Evaluation) -> Rate | None:
    """Degenerate outputs without steering, over harmful and harmless prompts together as the
    sweep counts them (the evaluation's baselines are the model being steered)."""
    blocks = [evaluation.sets.get(name) for name in ("harmful", "harmless")]
    rates = [b.degenerate.baseline.rate for b in blocks if b is not None and b.degenerate]
    if len(rates) < len(blocks):
        return None
    return Rate(sum(r.count for r in rates), sum(r.n for r in rates))


def _sweep_chart(sweep: list[_SweepRow], best: float | None) -> str:
    unsteered, points = sweep[0], sweep[1:]
    references = [
        (s, rate.value, f"{name} refusal, unsteered")
        for s, name, rate in (
            (0, "harmful", unsteered.harmful),
            (1, "harmless", unsteered.harmless),
        )
        if rate is not None and rate.n > 0
    ]
    chart = svg.interval_line_chart(
        [p.alpha or 0.0 for p in points],  # never None past the first row
        [
            ("harmful refusal", [_bar(p.harmful) for p in points]),
            ("harmless refusal", [_bar(p.harmless) for p in points]),
            ("degenerate output", [_bar(p.degenerate) for p in points]),
        ],
        title="Steering toward refusal: rates over α",
        x_label="α",
        y_label="rate",
        references=references,
        marker=best,
        marker_label=f"best α = {best:g}" if best is not None else "",
    )
    return _img(
        chart,
        "Harmful refusal, harmless refusal and degenerate-output rates over α with 95% intervals; "
        "dashed lines: refusal rates without steering",
    )


def _sweep_table(sweep: list[_SweepRow], best: float | None) -> str:
    rows = []
    for row in sweep:
        label = "unsteered" if row.alpha is None else _e(f"{row.alpha:g}")
        if row.alpha is not None and row.alpha == best:
            label = f"<strong>{label} (best)</strong>"
        rates = (row.harmful, row.harmless, row.degenerate)
        rows.append([_td(label), *(_td(_rate_text(r), rate=True) for r in rates)])
    headers = ["α", "harmful refusal", "harmless refusal", "degenerate output"]
    return _table(headers, rows, "sweep")


def _sweep_samples(rows: list[dict[str, Any]], per_set: int = 2) -> str:
    """The first ``per_set`` prompts of each set, unsteered and at every α, side by side: whether
    steering produced refusals or gibberish is plain to see."""
    swept = [r for r in rows if r.get("condition") == "alpha_sweep" and _is_number(r.get("alpha"))]
    alphas = sorted({float(r["alpha"]) for r in swept})
    by_prompt: dict[tuple[str, str], dict[float | None, dict[str, Any]]] = {}
    for row in swept:
        key = (str(row.get("set", "?")), str(row.get("prompt", "")))
        by_prompt.setdefault(key, {}).setdefault(float(row["alpha"]), row)
    for row in rows:
        key = (str(row.get("set", "?")), str(row.get("prompt", "")))
        if row.get("condition") == "baseline" and key in by_prompt:
            by_prompt[key].setdefault(None, row)
    out = []
    for name in dict.fromkeys(s for s, _ in by_prompt):
        prompts = [(p, by) for (s, p), by in by_prompt.items() if s == name][:per_set]
        table_rows = [
            [_td(f'<div class="completion">{_e(prompt)}</div>')]
            + [
                _td(
                    f'<div class="completion">{_e(str(by[a].get("completion", "")))}</div>'
                    + _verdicts(by[a])
                    if a in by
                    else "–"
                )
                for a in (None, *alphas)
            ]
            for prompt, by in prompts
        ]
        headers = ["prompt", "unsteered", *(_e(f"α = {a:g}") for a in alphas)]
        out.append(f"<h3>{_e(name)}</h3>" + _table(headers, table_rows, "samples"))
    if not out:
        return ""
    return (
        "<details><summary>Sample completions under steering</summary>"
        + f'<div class="wide">{"".join(out)}</div></details>'
    )


def _stage1(stage1: Stage1, pick: SelectionSummary, l_low: Any, tokens: Sequence[Any]) -> str:
    """Stage 1 of a two-stage run: the removal that made the model refuse less, and its effect."""
    rows = [
        [
            _td(_e(name)),
            _td(_rate_text(block.baseline), rate=True),
            _td(_rate_text(block.intervention), rate=True),
        ]
        for name, block in stage1.sets.items()
    ]
    facts = [
        *_pick_facts(pick, l_low, tokens),
        ("intervention", _e(stage1.intervention)),
        ("judge", f"<code>{_e(stage1.judge)}</code>"),
    ]
    return (
        "<h3>Stage 1: making the model refuse less</h3>"
        '<p class="note">Stage 1 selected a direction on the original model and removed it (the '
        "intervention below), making a model that refuses less; stage 2 selected a direction "
        "again on that model and steers it over α.</p>"
        + _facts(facts)
        + _table(["test set", "original model refusal", "refusal after stage 1"], rows)
    )


def _sweep_section(
    summary: RunSummary,
    weak: WeakAlignmentRun,
    rows: list[dict[str, Any]],
    run_dir: Path,
    tokens: Sequence[Any],
) -> str:
    setting = weak.weak_alignment
    steerable = setting.steerable
    # No best α where the sweep found nothing to steer, whatever else the file says.
    best = setting.best_alpha if steerable and _is_number(setting.best_alpha) else None
    sweep = _sweep_rows(summary.evaluation, weak)
    kind = "statement" if steerable else "statement finding"
    facts = [
        ("mode", _e(setting.mode)),
        ("steering", _e(f"{setting.steering.upper()} addition scaled by α")),
    ]
    if best is not None:
        facts.append(("best α", _e(f"{best:g}")))
    facts.append(("harmful refusal monotonic in α", "yes" if setting.harmful_monotonic else "no"))
    note = f" ({_e(setting.l_low_note)})" if setting.l_low_note else ""
    facts.append(("L_low", _value(setting.l_low) + note))
    contrast = setting.stage2_contrast
    if contrast is not None and _is_number(contrast.norm_ratio):
        facts.append(
            (
                "contrast left by stage 1 at the stage-2 pick",
                _e(
                    f"{contrast.norm_ratio:.2f} of the original norm"
                    + (f", cosine {contrast.cosine:.2f}" if _is_number(contrast.cosine) else "")
                ),
            )
        )
    steered = "the model after stage 1" if weak.stage1 else "the model"
    stage1 = ""
    if weak.stage1 is not None:
        # stage1-selection.json has what the summary's copy leaves out (L_low).
        record = _dict(_load_json(run_dir / "stage1-selection.json"))
        pick = _pick(record) or weak.stage1.selection
        stage1 = _stage1(weak.stage1, pick, record.get("l_low"), tokens)
    return (
        '<h2 id="sweep">Steering toward refusal (α sweep)</h2>'
        + f'<p class="{kind}"><strong>{"Result" if steerable else "Finding"}:</strong> '
        + f"{_e(setting.statement)}</p>"
        + _facts(facts)
        + f'<div class="plots">{_sweep_chart(sweep, best)}</div>'
        + f'<p class="note">Unsteered: {steered} without steering, which is also the baseline '
        "of the refusal rates below. Degenerate outputs count harmful and harmless prompts "
        "together.</p>" + _sweep_table(sweep, best) + _sweep_samples(rows) + stage1
    )


def _adversarial_facts(record: Adversarial | None) -> list[tuple[str, str]]:
    """The adversarial system-prompt condition in one line; nothing for a run without one."""
    if record is None:
        return []
    splits = " and ".join(record.applied_to) or "?"
    text = f"condition {record.condition}, on {splits} prompts"
    if record.text:
        text += f" — “{record.text}”"
    if record.test_prompts:
        text += f"; test prompts {record.test_prompts}"
    return [("adversarial system prompt", _e(text))]


# ---------------------------------------------------------------------------------------------
# configuration and provenance


def _provenance_section(run_dir: Path, config: Any, provenance: Any, splits: Any) -> str:
    provenance = _dict(provenance)
    model, chat = _dict(provenance.get("model")), _dict(provenance.get("chat"))
    others = {k: v for k, v in provenance.items() if k not in ("model", "chat", "versions")}
    split_rows = []
    for label, entry in _dict(splits).items():
        entry = _dict(entry)
        for name, prompts in _dict(entry.get("splits")).items():
            prompts = prompts if isinstance(prompts, list) else []
            hashes = "\n".join(str(_dict(p).get("sha256", "")) for p in prompts)
            split_rows.append(
                [
                    _td(_e(str(label))),
                    _td(_e(str(entry.get("source", "–")))),
                    _td(f"<code>{_value(entry.get('source_sha256'))}</code>"),
                    _td(_e(str(name))),
                    _td(str(len(prompts)), num=True),
                    # One digest per split: equal digests mean the same prompts in the same order.
                    _td(f"<code>{hashlib.sha256(hashes.encode()).hexdigest()[:16]}</code>"),
                ]
            )
    files = [
        [_td(f"<code>{name}</code>"), _td(f"<code>{_sha256(run_dir / name)}</code>")]
        for name in ("config.json", "provenance.json", "splits.json")
        if (run_dir / name).is_file()
    ]
    splits_html = (
        _table(["set", "source", "source sha256", "split", "n", "split digest"], split_rows)
        + '<p class="note">split digest: first 16 hex digits of sha256 over the newline-joined '
        "prompt hashes of that split, in order.</p>"
        if split_rows
        else '<p class="note">splits.json not found</p>'
    )
    # Short tables side by side so the long config table does not make the page endless.
    columns = [
        "<div><h3>Model</h3>" + _kv(model),
        "<h3>Versions</h3>" + _kv(_dict(provenance.get("versions"))),
        "<h3>File hashes (sha256)</h3>" + _table(["file", "sha256"], files) + "</div>",
        "<div><h3>Configuration (config.json)</h3>" + _kv(_dict(config)) + "</div>",
    ]
    return (
        '<h2 id="provenance">Configuration and provenance</h2>'
        + '<div class="cols">' + "".join(columns) + "</div>"
        + "<h3>Chat format</h3>" + _kv(chat)
        + ("<h3>Other provenance</h3>" + _kv(others) if others else "")
        + "<h3>Prompt splits</h3>" + splits_html
    )  # fmt: skip


# ---------------------------------------------------------------------------------------------
# pages


def _page(title: str, body: str) -> str:
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_e(title)}</title><style>{_CSS}</style></head>"
        f"<body><script>{_SCRIPT}</script><main>{body}</main></body></html>\n"
    )


def _pending_or_file(run_dir: Path, name: str, pending: Mapping[str, Any]) -> Any:
    return pending[name] if name in pending else _load_json(run_dir / name)


def _run_page(run_dir: Path, pending: Mapping[str, Any]) -> str:
    written = _pending_or_file(run_dir, "summary.json", pending)
    summary = RunSummary.from_dict(written) if written is not None else None
    selection = _dict(_load_json(run_dir / "selection.json"))  # its candidates are plotted
    pick = summary.selection if summary is not None else _pick(selection)
    provenance = _dict(_load_json(run_dir / "provenance.json"))
    status = _dict(_pending_or_file(run_dir, "status.json", pending))
    rows = _load_jsonl(run_dir / "completions.jsonl")
    tokens = list(_dict(provenance.get("chat")).get("post_instruction_tokens") or [])
    tokens = list(selection.get("position_tokens") or tokens)
    model = (summary.model if summary else None) or _dict(provenance.get("model")).get("spec")
    model = model or "?"
    facts = [("model", f"<code>{_e(str(model))}</code>")]
    diagnostics = pick.diagnostics if pick else None
    if pick is not None:
        facts += _pick_facts(pick, selection.get("l_low"), tokens)
    if diagnostics is not None:
        facts.append(("rank by score", f"{_num(diagnostics.rank)} of "
                      f"{_num(diagnostics.n_scored)} scored candidates"))  # fmt: skip
    stability = summary.selection.stability if summary else None
    if stability is not None:
        wins = ", ".join(
            f"{_num(w.position)}/{_num(w.layer)}: {_num(w.count)}" for w in stability.wins
        )
        facts.append(("pick stability", _e(
            f"won {_num(stability.pick_share, 2)} of {_num(stability.resamples)} "
            f"bootstrap resamples of the train prompts (position/layer: wins — {wins})"
        )))  # fmt: skip
    sweep = ""
    if summary is not None and summary.weak is not None and summary.weak.alpha_sweep:
        mode = _e(summary.weak.weak_alignment.mode)
        facts.append(("weak alignment", f'{mode}: <a href="#sweep">steering toward refusal</a>'))
        sweep = _sweep_section(summary, summary.weak, rows, run_dir, tokens)
    facts += _adversarial_facts(summary.adversarial if summary else None)
    facts += [
        ("run time", f"{_num(summary.seconds if summary else None, 1)} s"),
        ("state", _e(f"{status.get('state', '?')} ({status.get('stage', '?')})")),
    ]
    if summary is None:
        facts.append(("note", '<span class="error">no summary.json: the run did not finish</span>'))
    warning = diagnostics.warning if diagnostics else None
    evaluation = summary.evaluation if summary else None
    body = (
        "<h1>refusalkit run report</h1>"
        + (_verdict_banner(summary.verdict, warning) if summary else "")
        + _facts(facts)
        + sweep
        + _rates_section(evaluation, rows)
        + '<h2 id="selection">Selection</h2>'
        + _selection_plots(selection, tokens)
        + _details_section(evaluation)
        + '<h2 id="samples">Sample completions</h2>'
        + _samples(rows)
        + _provenance_section(
            run_dir,
            _load_json(run_dir / "config.json"),
            provenance,
            _load_json(run_dir / "splits.json"),
        )
    )
    return _page(f"refusalkit run — {model}", body)


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


def _compare_page(run_dir: Path, pending: Mapping[str, Any]) -> str:
    comparison = Comparison.from_dict(_pending_or_file(run_dir, "comparison.json", pending))
    provenance = _dict(_load_json(run_dir / "provenance.json"))
    status = _dict(_pending_or_file(run_dir, "status.json", pending))
    tokens = list(_dict(provenance.get("chat")).get("post_instruction_tokens") or [])
    ok = comparison.selected
    # Columns only for what some row recorded: a run without over-refusal prompts has none.
    evaluated = {label for row in ok for label in row.sets}
    rate_columns = [c for c in _COMPARE_RATES if c[1] in evaluated]
    number_columns = list(_COMPARE_NUMBERS) if ok else []
    sets = [s for s in _SETS if s[0] in evaluated]
    # Two tables, picks and rates, so each fits the page width.
    pick_headers = ["method", "position", "layer", "score", "KL val"]
    pick_headers += [h for h, _ in number_columns] + ["selection time"]
    rate_headers = ["method", *(h for h, _, _ in rate_columns), "degenerate"]

    pick_rows, rate_rows, bars, sections = [], [], [], []
    for row in comparison.rows:
        method = _e(row.name)
        completions = _load_jsonl(run_dir / f"completions-{row.name}.jsonl")
        selection = _dict(_load_json(run_dir / f"selection-{row.name}.json"))
        link = _td(f'<a href="#method-{method}"><code>{method}</code></a>')
        if isinstance(row, FailedMethod):
            error = f"no selection: {_e(row.error)}"
            first = link if selection else _td(f"<code>{method}</code>")
            pick_rows.append(
                [first, f'<td colspan="{len(pick_headers) - 1}" class="error">{error}</td>']
            )
            rate_rows.append([first, f'<td colspan="{len(rate_headers) - 1}">–</td>'])
            if selection:  # a failed selection still has every candidate's scores to look at
                sections.append(
                    f'<h2 id="method-{method}">{method}</h2><p class="error">{error}</p>'
                    + _selection_plots(selection, tokens)
                )
            continue
        token = ""
        if -len(tokens) <= row.position < 0:
            token = _token(tokens[len(tokens) + row.position])
        pick_rows.append(
            [
                link,
                _td(f"{_num(row.position)}&nbsp;<code>{token}</code>"),
                _td(_num(row.layer), num=True),
                _td(_num(row.score), num=True),
                _td(_num(row.kl), num=True),
                *(_td(_num(value(row)), num=True) for _, value in number_columns),
                _td(f"{_num(row.selection_seconds, 1)} s", num=True),
            ]
        )
        rate_rows.append(
            [
                link,
                *(_td(_rate_text(rate(row)), rate=True) for _, _, rate in rate_columns),
                _td(_rate_text(row.degenerate), rate=True),
            ]
        )
        bars.append((row.name, [_set_rate(row, s) for s, _ in sets]))
        sections.append(
            f'<h2 id="method-{method}">{method}</h2>'
            + _facts(
                _pick_facts(_pick(selection) or _row_pick(row), selection.get("l_low"), tokens)
            )
            + _selection_plots(selection, tokens)
            + f"<details><summary>Sample completions ({method})</summary>"
            + _samples(completions)
            + "</details>"
        )
    # Baseline completions are generated once and shared by every method: one baseline group.
    baselines = [_set_rate(ok[0], s, "baseline") for s, _ in sets] if ok else []
    baseline_text = ", ".join(
        f"{label} {_rate_text(r)}" for (_, label), r in zip(sets, baselines, strict=True)
    )
    chart = svg.bar_chart(
        ["no intervention", *(group for group, _ in bars)],
        [label for _, label in sets],
        [[_bar(r) for r in rates] for rates in (baselines, *(rates for _, rates in bars))],
        title="Refusal rate per method (interventions as in the table)",
        y_label="refusal rate",
    )
    facts = [
        ("model", f"<code>{_e(comparison.model)}</code>"),
        ("judge", f"<code>{_e(comparison.judge)}</code>"),
        ("methods", f"{len(ok)} selected of {len(comparison.rows)}"),
        *_adversarial_facts(comparison.adversarial),
        ("run time", f"{_num(comparison.seconds, 1)} s"),
        ("state", _e(f"{status.get('state', '?')} ({status.get('stage', '?')})")),
    ]
    alt = "Bar chart of refusal rates per method with 95% intervals"
    working = comparison.working_methods
    verdict = (
        '<p class="statement">Working directions from: ' + _e(", ".join(working)) + "</p>"
        if working
        else '<p class="statement finding"><b>No working direction</b> from any method: no '
        "selected direction removed or induced refusal on the test prompts (verdicts per method in "
        "comparison.json).</p>"
    )
    body = (
        f"<h1>refusalkit compare report</h1>{verdict}{_facts(facts)}"
        '<h2 id="comparison">Comparison</h2>'
        + (
            f"<p>Baselines (no intervention, shared by all methods): {baseline_text}.</p>"
            if ok
            else ""
        )
        + "<h3>Picks</h3>"
        + f'<div class="wide">{_table(pick_headers, pick_rows)}</div>'
        + "<h3>Rates under intervention</h3>"
        + f'<div class="wide">{_table(rate_headers, rate_rows, "compact")}</div>'
        + (f'<div class="plots">{_img(chart, alt)}</div>' if sets else "")
        + "".join(sections)
        + _provenance_section(
            run_dir,
            _load_json(run_dir / "config.json"),
            provenance,
            _load_json(run_dir / "splits.json"),
        )
    )
    return _page(f"refusalkit compare — {comparison.model}", body)


def render_html(run_dir: Path, pending: Mapping[str, Any] | None = None) -> str:
    """The report page for a run directory (summary.json/selection.json) or a compare directory
    (comparison.json), as one self-contained HTML string. ``pending`` maps file names to the
    content they are about to be written with: a workflow renders its report before it writes
    its result file (see refusalkit.runs.directory), as the finished directory will read."""
    run_dir = Path(run_dir)
    pending = pending or {}
    present = {name for name in pending} | {p.name for p in run_dir.glob("*.json")}
    if "comparison.json" in present:
        return _compare_page(run_dir, pending)
    if "summary.json" in present or "selection.json" in present:
        return _run_page(run_dir, pending)
    raise RefusalkitError(
        f"{run_dir} has no summary.json, selection.json or comparison.json: "
        "give the directory of a `refusalkit run` or `refusalkit compare`"
    )


def write_html_report(run_dir: Path, pending: Mapping[str, Any] | None = None) -> Path:
    """Render the report and write it atomically to ``run_dir / "report.html"``."""
    path = Path(run_dir) / "report.html"
    write_text(path, render_html(Path(run_dir), pending))
    return path
