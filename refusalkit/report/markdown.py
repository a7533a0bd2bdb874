"""Markdown renderings of a run's results: ``report.md`` and ``comparison.md``."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from refusalkit.runs.records import (
    Adversarial,
    Comparison,
    Diagnostics,
    Evaluation,
    FailedMethod,
    RunSummary,
    RunVerdict,
    SelectionSummary,
    Stability,
)
from refusalkit.selection.diagnostics import describe_removed

_NAMES = {"harmful": "harmful", "harmless": "harmless", "over_refusal": "over-refusal"}


def render_comparison(comparison: Comparison | Mapping[str, Any]) -> str:
    """``comparison.md``; the comparison as a record or as ``comparison.json`` holds it."""
    if not isinstance(comparison, Comparison):
        comparison = Comparison.from_dict(comparison)
    lines = [
        f"# refusalkit compare — {comparison.model}",
        "",
        *adversarial_line(comparison.adversarial),
        "Rates: value (count/n, 95% Wilson interval). KL val = selection KL on validation "
        "prompts; KL test / ΔCE = KL at the first response position and cross-entropy increase "
        "(nats/token) of the clean harmless completions under removal.",
        "",
        "| selector | steering | position | layer | KL val | KL test | ΔCE "
        "| harmful refusal, removal | attack success | harmless refusal, addition "
        "| over-refusal, removal | degenerate |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in comparison.rows:
        if isinstance(row, FailedMethod):
            lines.append(
                f"| {row.selector} | {row.steering} | – | – | – | – | – | no selection: "
                f"{row.error} | – | – | – | – |"
            )
            continue
        over = (
            row.sets["over_refusal"].intervention.describe() if "over_refusal" in row.sets else "–"
        )
        lines.append(
            f"| {row.selector} | {row.steering} | {row.position} | {row.layer} | "
            f"{row.kl:.3f} | {row.test_kl:.3f} | {row.cross_entropy_increase:+.3f} | "
            f"{row.sets['harmful'].intervention.describe()} | {row.compliance.describe()} | "
            f"{row.sets['harmless'].intervention.describe()} | {over} | "
            f"{row.degenerate.describe()} |"
        )
    selected = comparison.selected
    if selected:
        # Baseline completions are shared by every method: the first row's are everyone's.
        baselines = [
            f"{_NAMES[label]} {block.baseline.describe()}"
            for label, block in selected[0].sets.items()
        ]
        lines += [
            "",
            "Baseline refusal (no intervention): " + "; ".join(baselines) + ".",
            f"Judge: {comparison.judge}. Run time {comparison.seconds} s.",
            "",
        ]
    return "\n".join(lines)


def render_report(
    summary: RunSummary | Mapping[str, Any],
    provenance: Mapping[str, Any],
    record: Mapping[str, Any],
) -> str:
    """``report.md``; the summary as a record or as ``summary.json`` holds it, with the run's
    provenance and its full selection record (``selection.json``: L_low, every candidate)."""
    if not isinstance(summary, RunSummary):
        summary = RunSummary.from_dict(summary)
    evaluation = summary.evaluation
    lines = [
        f"# refusalkit run — {summary.model}",
        "",
        *_verdict_banner(summary.verdict),
        *_selection_lines(summary.selection, provenance, record),
        "",
        *_rates_table(evaluation),
        "",
        *_side_effect_lines(evaluation),
        "",
        *_judges_table(evaluation),
        *_category_tables(evaluation),
        "",
        "## Top candidates",
        "",
        *_top_candidates(record),
        *_hard_case_lines(summary),
        "",
        _model_line(provenance["model"], summary.seconds),
        "",
    ]
    return "\n".join(lines)


def _model_line(model: Mapping[str, Any], seconds: float) -> str:
    return (
        f"Model: {model['spec']} ({model['class']}, {model['n_layers']} layers), "
        f"{model['dtype']} on {model['device']}. Run time {seconds} s."
    )


def _selection_lines(
    selection: SelectionSummary, provenance: Mapping[str, Any], record: Mapping[str, Any]
) -> list[str]:
    """The pick, what the filters kept, and why it is the pick."""
    token = provenance["chat"]["post_instruction_tokens"][selection.position]
    return [
        f"Selected by {selection.method}-{selection.steering.upper()}: position "
        f"{selection.position} (token {token!r}), layer {selection.layer}, "
        f"score {selection.score:.4f}, KL {selection.kl:.4f}.",
        f"Candidates: {selection.n_candidates}, kept by the score-independent filters: "
        f"{selection.n_kept}."
        + (f" Evaluation layers L_low: {record['l_low']}." if "l_low" in record else ""),
        *_diagnostics_lines(selection.diagnostics),
        *_stability_lines(selection.stability),
    ]


def _rates_table(evaluation: Evaluation) -> list[str]:
    lines = [
        f"Refusal rates by the {evaluation.judge} judge: value (count/n, 95% Wilson interval).",
        "",
        "| test set | intervention | n | baseline refusal | with intervention |",
        "|---|---|---|---|---|",
    ]
    lines += [
        f"| {_NAMES[label]} | {evaluation.interventions[label]} | {block.n} | "
        f"{block.baseline.describe()} | {block.intervention.describe()} |"
        for label, block in evaluation.sets.items()
    ]
    return lines


def _side_effect_lines(evaluation: Evaluation) -> list[str]:
    """Attack success, degenerate outputs and the coherence cost."""
    harmful = evaluation.sets["harmful"]
    coherence = evaluation.coherence
    degenerate = evaluation.degenerate.describe() if evaluation.degenerate else "–"
    return [
        "Attack success (harmful, neither refused nor degenerate): "
        + (harmful.compliance.describe() if harmful.compliance else "–")
        + f". Degenerate outputs under intervention: {degenerate}.",
        f"Coherence on harmless prompts under removal: KL {coherence.kl:.4f} at the "
        "first response position; cross-entropy of the clean completions "
        f"{coherence.baseline_cross_entropy:.3f} → "
        f"{coherence.intervention_cross_entropy:.3f} nats/token "
        f"({coherence.n_tokens} tokens).",
    ]


def _judges_table(evaluation: Evaluation) -> list[str]:
    lines = [
        "## Every judge",
        "",
        "| judge | set | baseline refusal | with intervention |",
        "|---|---|---|---|",
    ]
    for judge, blocks in evaluation.judges.items():
        for label, rates in blocks.items():
            lines.append(
                f"| {judge} | {_NAMES[label]} | {rates.baseline.describe()} | "
                f"{rates.intervention.describe()} |"
            )
    return lines


def _category_tables(evaluation: Evaluation) -> list[str]:
    """Per-category rates of every set that has more than one category."""
    lines: list[str] = []
    for label, block in evaluation.sets.items():
        categories = block.per_category or {}
        if len(categories) < 2:
            continue
        lines += [
            "",
            f"## {_NAMES[label].capitalize()} prompts by category",
            "",
            "| category | n | baseline refusal | with intervention |",
            "|---|---|---|---|",
        ]
        lines += [
            f"| {category} | {rates.n} | {rates.baseline.describe()} | "
            f"{rates.intervention.describe()} |"
            for category, rates in categories.items()
        ]
    return lines


def _top_candidates(record: Mapping[str, Any]) -> list[str]:
    """The ten best candidates of ``selection.json`` by its ranking, every score it records."""
    by_key = {(c["position"], c["layer"]): c for c in record["candidates"]}
    top = [by_key[(p, l)] for p, l in record["ranking"][:10]]
    columns = [k for k in top[0] if k not in ("position", "layer", "status")]
    lines = ["| position | layer | " + " | ".join(columns) + " | status |"]
    lines.append("|---|---|" + "---|" * len(columns) + "---|")
    for row in top:
        values = " | ".join(
            "–"
            if row[c] is None or (isinstance(row[c], float) and math.isnan(row[c]))
            else f"{row[c]:.4f}"
            for c in columns
        )
        lines.append(f"| {row['position']} | {row['layer']} | {values} | {row['status']} |")
    return lines


def _diagnostics_lines(diagnostics: Diagnostics | None) -> list[str]:
    if diagnostics is None:
        return []
    lines = [f"The pick ranks {diagnostics.rank} of {diagnostics.n_scored} scored candidates "
             "by the method's criterion."]  # fmt: skip
    lines += [
        f"{describe_removed(entry.to_dict())} above it."
        for entry in diagnostics.removed_above_pick.values()
    ]
    if diagnostics.warning:
        lines.append(f"**Warning:** {diagnostics.warning}.")
    return [" ".join(lines)]


def _stability_lines(stability: Stability | None) -> list[str]:
    if stability is None:
        return []
    wins = ", ".join(f"position {w.position} layer {w.layer}: {w.count}" for w in stability.wins)
    return [
        f"Pick stability: the pick won {stability.pick_share:.0%} of "
        f"{stability.resamples} bootstrap resamples of the train prompts (wins: {wins}"
        + (f"; nothing selected: {stability.nothing_selected}" if stability.nothing_selected
           else "") + ")."
    ]  # fmt: skip


def _verdict_banner(verdict: RunVerdict) -> list[str]:
    shown = ", ".join(f"{kind}: **{effect}**" for kind, effect in verdict.effects())
    failed = "" if verdict.works else " — no working direction"
    head = f"> **Verdict{failed}** ({shown})"
    return [head, f"> {verdict.reason}", ""]


def adversarial_line(adversarial: Adversarial | None) -> list[str]:
    if adversarial is None:
        return []
    return [
        f"Adversarial system prompt, condition {adversarial.condition} (on the "
        f"{' and '.join(adversarial.applied_to)} prompts; test prompts evaluated without it): "
        f"{adversarial.text!r}",
        "",
    ]


def _hard_case_lines(summary: RunSummary) -> list[str]:
    """report.md sections for SPEC §5's settings: adversarial condition, stage 1, α sweep."""
    lines = ["", *adversarial_line(summary.adversarial)]
    weak = summary.weak
    if weak is None:
        return lines
    stage1 = weak.stage1
    if stage1 is not None:
        pick = stage1.selection
        lines += [
            "## Stage 1: a weakly aligned model made from this one",
            "",
            f"COSMIC-ACE picked position {pick.position}, layer {pick.layer} "
            f"(KL {pick.kl:.4f}); {stage1.intervention} is active in everything below.",
            "",
            "| test set | original model | after stage 1 |",
            "|---|---|---|",
        ]
        lines += [
            f"| {label} | {block.baseline.describe()} | {block.intervention.describe()} |"
            for label, block in stage1.sets.items()
        ]
        lines.append("")
    setting = weak.weak_alignment
    if weak.alpha_sweep:
        lines += [
            f"## Steering toward refusal: ACE addition sweep ({setting.mode})",
            "",
            setting.statement,
            "",
            "| α | harmful refusal | harmless refusal | degenerate |",
            "|---|---|---|---|",
            "| unsteered | "
            + " | ".join(setting.unsteered[label].describe() for label in ("harmful", "harmless"))
            + " | – |",
        ]
        lines += [
            f"| {point.alpha:g} | {point.harmful.describe()} | {point.harmless.describe()} | "
            f"{point.degenerate.describe()} |"
            for point in weak.alpha_sweep
        ]
    return lines
