"""Markdown renderings of a run's results: ``report.md`` and ``comparison.md``."""

from __future__ import annotations

import math
from typing import Any

from refusalkit.evaluation.metrics import format_block_rate, format_rate
from refusalkit.evaluation.verdict import effects
from refusalkit.selection.diagnostics import describe_removed


def render_comparison(comparison: dict[str, Any]) -> str:
    lines = [
        f"# refusalkit compare — {comparison['model']}",
        "",
        *adversarial_line(comparison.get("adversarial")),
        "Rates: value (count/n, 95% Wilson interval). KL val = selection KL on validation "
        "prompts; KL test / ΔCE = KL at the first response position and cross-entropy increase "
        "(nats/token) of the clean harmless completions under removal.",
        "",
        "| selector | steering | position | layer | KL val | KL test | ΔCE "
        "| harmful refusal, removal | attack success | harmless refusal, addition "
        "| over-refusal, removal | degenerate |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in comparison["rows"]:
        if "error" in row:
            lines.append(
                f"| {row['selector']} | {row['steering']} | – | – | – | – | – | no selection: "
                f"{row['error']} | – | – | – | – |"
            )
            continue
        over = (
            format_block_rate(row, "over_refusal_intervention_refusal", "over_refusal_n")
            if "over_refusal_n" in row
            else "–"
        )
        lines.append(
            f"| {row['selector']} | {row['steering']} | {row['position']} | {row['layer']} | "
            f"{row['kl']:.3f} | {row['test_kl']:.3f} | {row['cross_entropy_increase']:+.3f} | "
            f"{format_block_rate(row, 'harmful_intervention_refusal')} | "
            f"{format_block_rate(row, 'harmful_intervention_compliance')} | "
            f"{format_block_rate(row, 'harmless_intervention_refusal')} | {over} | "
            f"{format_block_rate(row, 'degenerate', 'degenerate_n')} |"
        )
    first = next((row for row in comparison["rows"] if "error" not in row), None)
    if first is not None:
        baselines = [
            f"harmful {format_block_rate(first, 'harmful_baseline_refusal')}",
            f"harmless {format_block_rate(first, 'harmless_baseline_refusal')}",
        ]
        if "over_refusal_n" in first:
            baselines.append(
                "over-refusal "
                + format_block_rate(first, "over_refusal_baseline_refusal", "over_refusal_n")
            )
        lines += [
            "",
            "Baseline refusal (no intervention): " + "; ".join(baselines) + ".",
            f"Judge: {comparison['judge']}. Run time {comparison['seconds']} s.",
            "",
        ]
    return "\n".join(lines)


def render_report(
    summary: dict[str, Any], provenance: dict[str, Any], record: dict[str, Any]
) -> str:
    selection, evaluation = summary["selection"], summary["evaluation"]

    def rate(block: dict[str, Any], condition: str) -> str:
        prefix = f"{condition}_refusal"
        return format_rate(
            block[f"{prefix}_rate"],
            block[f"{prefix}_count"],
            block[f"{condition}_judged"] if f"{condition}_judged" in block else block["n"],
            block[f"{prefix}_rate_ci95"],
        )

    names = {"harmful": "harmful", "harmless": "harmless", "over_refusal": "over-refusal"}
    sets = [label for label in names if label in evaluation]
    token = provenance["chat"]["post_instruction_tokens"][selection["position"]]
    lines = [
        f"# refusalkit run — {summary['model']}",
        "",
        *_verdict_banner(summary.get("verdict")),
        f"Selected by {selection['method']}-{selection['steering'].upper()}: position "
        f"{selection['position']} (token {token!r}), layer {selection['layer']}, "
        f"score {selection['score']:.4f}, KL {selection['kl']:.4f}.",
        f"Candidates: {selection['n_candidates']}, kept by the score-independent filters: "
        f"{selection['n_kept']}."
        + (f" Evaluation layers L_low: {record['l_low']}." if "l_low" in record else ""),
        *_diagnostics_lines(record.get("diagnostics")),
        *_stability_lines(selection.get("stability")),
        "",
        f"Refusal rates by the {evaluation['judge']} judge: value (count/n, 95% Wilson interval).",
        "",
        "| test set | intervention | n | baseline refusal | with intervention |",
        "|---|---|---|---|---|",
    ]
    lines += [
        f"| {names[label]} | {evaluation['interventions'][label]} | {evaluation[label]['n']} | "
        f"{rate(evaluation[label], 'baseline')} | {rate(evaluation[label], 'intervention')} |"
        for label in sets
    ]
    harmful = evaluation["harmful"]
    coherence_block = evaluation["coherence"]
    lines += [
        "",
        "Attack success (harmful, neither refused nor degenerate): "
        + format_rate(
            harmful["intervention_compliance_rate"],
            harmful["intervention_compliance_count"],
            harmful["n"],
            harmful["intervention_compliance_rate_ci95"],
        )
        + ". Degenerate outputs under intervention: "
        + format_rate(
            evaluation["degenerate_rate"],
            evaluation["degenerate_count"],
            evaluation["degenerate_n"],
            evaluation["degenerate_rate_ci95"],
        )
        + ".",
        f"Coherence on harmless prompts under removal: KL {coherence_block['kl']:.4f} at the "
        "first response position; cross-entropy of the clean completions "
        f"{coherence_block['baseline_cross_entropy']:.3f} → "
        f"{coherence_block['intervention_cross_entropy']:.3f} nats/token "
        f"({coherence_block['n_tokens']} tokens).",
        "",
        "## Every judge",
        "",
        "| judge | set | baseline refusal | with intervention |",
        "|---|---|---|---|",
    ]
    for judge, blocks in evaluation["judges"].items():
        for label, block in blocks.items():
            lines.append(
                f"| {judge} | {names[label]} | {rate(block, 'baseline')} | "
                f"{rate(block, 'intervention')} |"
            )
    for label in sets:
        categories = evaluation[label]["per_category"]
        if len(categories) < 2:
            continue
        lines += [
            "",
            f"## {names[label].capitalize()} prompts by category",
            "",
            "| category | n | baseline refusal | with intervention |",
            "|---|---|---|---|",
        ]
        lines += [
            f"| {category} | {block['n']} | {rate(block, 'baseline')} | "
            f"{rate(block, 'intervention')} |"
            for category, block in categories.items()
        ]
    lines += [
        "",
        "## Top candidates",
        "",
    ]
    by_key = {(c["position"], c["layer"]): c for c in record["candidates"]}
    top = [by_key[(p, l)] for p, l in record["ranking"][:10]]
    columns = [k for k in top[0] if k not in ("position", "layer", "status")]
    lines.append("| position | layer | " + " | ".join(columns) + " | status |")
    lines.append("|---|---|" + "---|" * len(columns) + "---|")
    for row in top:
        values = " | ".join(
            "–"
            if row[c] is None or (isinstance(row[c], float) and math.isnan(row[c]))
            else f"{row[c]:.4f}"
            for c in columns
        )
        lines.append(f"| {row['position']} | {row['layer']} | {values} | {row['status']} |")
    lines += _hard_case_lines(summary)
    model = provenance["model"]
    lines += [
        "",
        f"Model: {model['spec']} ({model['class']}, {model['n_layers']} layers), "
        f"{model['dtype']} on {model['device']}. Run time {summary['seconds']} s.",
        "",
    ]
    return "\n".join(lines)


def _diagnostics_lines(diagnostics: dict[str, Any] | None) -> list[str]:
    if not diagnostics:
        return []
    lines = [f"The pick ranks {diagnostics['rank']} of {diagnostics['n_scored']} scored candidates "
             "by the method's criterion."]  # fmt: skip
    lines += [
        f"{describe_removed(entry)} above it."
        for entry in diagnostics["removed_above_pick"].values()
    ]
    if diagnostics.get("warning"):
        lines.append(f"**Warning:** {diagnostics['warning']}.")
    return [" ".join(lines)]


def _stability_lines(stability: dict[str, Any] | None) -> list[str]:
    if not stability:
        return []
    wins = ", ".join(
        f"position {w['position']} layer {w['layer']}: {w['count']}" for w in stability["wins"]
    )
    return [
        f"Pick stability: the pick won {stability['pick_share']:.0%} of "
        f"{stability['resamples']} bootstrap resamples of the train prompts (wins: {wins}"
        + (f"; nothing selected: {stability['nothing_selected']}" if stability["nothing_selected"]
           else "") + ")."
    ]  # fmt: skip


def _verdict_banner(verdict: dict[str, Any] | None) -> list[str]:
    if not verdict:
        return []
    shown = ", ".join(f"{kind}: **{effect}**" for kind, effect in effects(verdict))
    failed = "" if verdict["works"] else " — no working direction"
    head = f"> **Verdict{failed}** ({shown})"
    return [head, f"> {verdict['reason']}", ""]


def adversarial_line(adversarial: dict[str, Any] | None) -> list[str]:
    if not adversarial:
        return []
    return [
        f"Adversarial system prompt, condition {adversarial['condition']} (on the "
        f"{' and '.join(adversarial['applied_to'])} prompts; test prompts evaluated without it): "
        f"{adversarial['text']!r}",
        "",
    ]


def _sweep_rate(point: dict[str, Any], name: str, kind: str = "refusal_") -> str:
    return format_rate(
        point[f"{name}_{kind}rate"],
        point[f"{name}_{kind}count"],
        point[f"{name}_n"],
        point[f"{name}_{kind}rate_ci95"],
    )


def _hard_case_lines(summary: dict[str, Any]) -> list[str]:
    """report.md sections for SPEC §5's settings: adversarial condition, stage 1, α sweep."""
    lines = ["", *adversarial_line(summary.get("adversarial"))]
    stage1 = summary.get("stage1")
    if stage1:
        pick = stage1["selection"]
        lines += [
            "## Stage 1: a weakly aligned model made from this one",
            "",
            f"COSMIC-ACE picked position {pick['position']}, layer {pick['layer']} "
            f"(KL {pick['kl']:.4f}); {stage1['intervention']} is active in everything below.",
            "",
            "| test set | original model | after stage 1 |",
            "|---|---|---|",
        ]
        lines += [
            f"| {label} | {format_block_rate(stage1[label], 'baseline_refusal')} | "
            f"{format_block_rate(stage1[label], 'intervention_refusal')} |"
            for label in ("harmful", "harmless")
        ]
        lines.append("")
    sweep, weak = summary.get("alpha_sweep"), summary.get("weak_alignment")
    if sweep and weak:
        unsteered = weak["unsteered"]
        lines += [
            f"## Steering toward refusal: ACE addition sweep ({weak['mode']})",
            "",
            weak["statement"],
            "",
            "| α | harmful refusal | harmless refusal | degenerate |",
            "|---|---|---|---|",
            "| unsteered | "
            + " | ".join(
                format_rate(u["rate"], u["count"], u["n"], u["ci95"])
                for u in (unsteered["harmful"], unsteered["harmless"])
            )
            + " | – |",
        ]
        lines += [
            f"| {point['alpha']:g} | {_sweep_rate(point, 'harmful')} | "
            f"{_sweep_rate(point, 'harmless')} | {_sweep_rate(point, 'degenerate', '')} |"
            for point in sweep
        ]
    return lines
