"""Weakly aligned models: steering toward refusal over α, and stage 1 of a two-stage run."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeGuard

from refusalkit.evaluation.metrics import Rate
from refusalkit.report import svg
from refusalkit.report.html.elements import (
    as_dict,
    as_text,
    facts_block,
    img,
    interval,
    load_json,
    rate_text,
    table,
    td,
)
from refusalkit.report.html.samples import verdict_badges
from refusalkit.report.html.selection import pick_facts, selected_pick
from refusalkit.report.svg import escape_text as _e
from refusalkit.runs.records import (
    Evaluation,
    RunSummary,
    SelectionSummary,
    Stage1,
    WeakAlignmentRun,
)


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
            ("harmful refusal", [interval(p.harmful) for p in points]),
            ("harmless refusal", [interval(p.harmless) for p in points]),
            ("degenerate output", [interval(p.degenerate) for p in points]),
        ],
        title="Steering toward refusal: rates over α",
        x_label="α",
        y_label="rate",
        references=references,
        marker=best,
        marker_label=f"best α = {best:g}" if best is not None else "",
    )
    return img(
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
        rows.append([td(label), *(td(rate_text(r), rate=True) for r in rates)])
    headers = ["α", "harmful refusal", "harmless refusal", "degenerate output"]
    return table(headers, rows, "sweep")


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
            [td(f'<div class="completion">{_e(prompt)}</div>')]
            + [
                td(
                    f'<div class="completion">{_e(str(by[a].get("completion", "")))}</div>'
                    + verdict_badges(by[a])
                    if a in by
                    else "–"
                )
                for a in (None, *alphas)
            ]
            for prompt, by in prompts
        ]
        headers = ["prompt", "unsteered", *(_e(f"α = {a:g}") for a in alphas)]
        out.append(f"<h3>{_e(name)}</h3>" + table(headers, table_rows, "samples"))
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
            td(_e(name)),
            td(rate_text(block.baseline), rate=True),
            td(rate_text(block.intervention), rate=True),
        ]
        for name, block in stage1.sets.items()
    ]
    facts = [
        *pick_facts(pick, l_low, tokens),
        ("intervention", _e(stage1.intervention)),
        ("judge", f"<code>{_e(stage1.judge)}</code>"),
    ]
    return (
        "<h3>Stage 1: making the model refuse less</h3>"
        '<p class="note">Stage 1 selected a direction on the original model and removed it (the '
        "intervention below), making a model that refuses less; stage 2 selected a direction "
        "again on that model and steers it over α.</p>"
        + facts_block(facts)
        + table(["test set", "original model refusal", "refusal after stage 1"], rows)
    )


def sweep_section(
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
    facts.append(("L_low", as_text(setting.l_low) + note))
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
        record = as_dict(load_json(run_dir / "stage1-selection.json"))
        pick = selected_pick(record) or weak.stage1.selection
        stage1 = _stage1(weak.stage1, pick, record.get("l_low"), tokens)
    return (
        '<h2 id="sweep">Steering toward refusal (α sweep)</h2>'
        + f'<p class="{kind}"><strong>{"Result" if steerable else "Finding"}:</strong> '
        + f"{_e(setting.statement)}</p>"
        + facts_block(facts)
        + f'<div class="plots">{_sweep_chart(sweep, best)}</div>'
        + f'<p class="note">Unsteered: {steered} without steering, which is also the baseline '
        "of the refusal rates below. Degenerate outputs count harmful and harmless prompts "
        "together.</p>" + _sweep_table(sweep, best) + _sweep_samples(rows) + stage1
    )
