"""The harmfulness run's reports: ``report.md`` and a self-contained ``report.html`` (scatter of
belief scores, per-layer cosine, reply inversion, the guard table beside every baseline)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from refusalkit.report import svg
from refusalkit.report.html.elements import img, table, td
from refusalkit.report.html.page import page
from refusalkit.report.svg import escape_text as _e

CLASSIFIER_NAMES = {
    "latent-guard": "Latent Guard (Δ_harmful at t_inst)",
    "own-refusal": "the model's own refusal (first-token log-odds > 0)",
    "delta-refuse": "Δ_refuse classifier (t_post-inst, τ on validation)",
    "logistic-probe": "logistic probe (same t_inst activations)",
    "guard-model": "guard model (prompt only)",
}


def guard_settings_text(guard: dict[str, Any]) -> str:
    """One line for a guard's ``describe()`` record: reading, layers, centring, length, τ."""
    length = "length direction removed" if guard.get("length") == "removed" else "length kept"
    return (
        f"{guard.get('reading', 't_inst')} reading, layers {guard['layers'][0]}–"
        f"{guard['layers'][-1]}, {'centred' if guard['centred'] else 'raw'} cosines, {length}, "
        f"τ = {guard['tau']:.4f} ({guard['tau_rule']})"
    )


def _pct(entry: Mapping[str, Any]) -> str:
    low, high = entry["ci95"]
    flagged = f"{entry['flagged_harmful']}/{entry['n']} flagged"
    return f"{entry['accuracy']:.2f} ({flagged}; {low:.2f}–{high:.2f})"


def classifier_rows(record: Mapping[str, Any]) -> tuple[list[str], list[list[str]]]:
    """One row per evaluation set, one column per classifier: accuracy (flagged/n; 95% CI)."""
    classifiers = {"latent-guard": record["guard"]["evaluation"]}
    classifiers.update({k: v["sets"] for k, v in record["baselines"].items()})
    sets = list(record["guard"]["evaluation"])
    headers = ["set (true class)", *(CLASSIFIER_NAMES.get(k, k) for k in classifiers)]
    rows = []
    for name in sets:
        label = record["guard"]["evaluation"][name]["label"]
        rows.append(
            [
                f"{name} ({label})",
                *(_pct(c[name]) if name in c else "–" for c in classifiers.values()),
            ]
        )
    return headers, rows


def inversion_rows(record: Mapping[str, Any]) -> list[list[str]]:
    by_layer: dict[int, dict[str, Mapping[str, Any]]] = {}
    for row in record["reply_inversion"]:
        by_layer.setdefault(row["layer"], {})[row["direction"]] = row
    out = []
    for layer, rows in sorted(by_layer.items()):
        cells = [str(layer)]
        for direction in ("none", "harmfulness", "refusal"):
            row = rows.get(direction)
            if row is None:
                cells.append("–")
                continue
            low, high = row["no_ci95"]
            cells.append(
                f"{row['no_rate']:.2f} ({row['no_count']}/{row['n']}; {low:.2f}–{high:.2f}; "
                f"affirmative {row['affirmative_count']}, invalid {row['invalid']})"
            )
        out.append(cells)
    return out


def _markdown_table(headers: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


SETTINGS_HEADERS = ["reading", "layers", "cosines", "length", "τ", "validation balanced accuracy"]


def settings_rows(record: Mapping[str, Any]) -> list[list[str]]:
    """The guard settings compared on the run's validation prompts (``guard_settings``), best
    first: what the defaults are checked against on the user's own prompts."""
    grid = sorted(record.get("guard_settings", []), key=lambda r: -r["val_balanced_accuracy"])
    return [
        [
            row["reading"], row["layers"], "centred" if row["centred"] else "raw",
            row.get("length", "kept"), f"{row['tau_rule']} ({row['tau']:.4f})",
            f"{row['val_balanced_accuracy']:.3f}",
        ]
        for row in grid
    ]  # fmt: skip


SETTINGS_NOTE = (
    "Every guard setting on this run's validation prompts; calibrated rows are measured on the "
    "prompts their τ was fitted on, an upper bound of their kind."
)


def render_harmfulness_markdown(record: Mapping[str, Any], provenance: Mapping[str, Any]) -> str:
    groups = record["groups"]
    cosines = [c for c in record["cosine_harmfulness_refusal"] if c == c]
    guard = record["guard"]
    latency = record["latency_seconds_per_prompt"]
    headers, rows = classifier_rows(record)
    parts = [
        f"# Harmfulness is not refusal — {record['model']}",
        "",
        "Groups by the model's own greedy completions ("
        + ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in groups.items())
        + f"; judge: {record['groups_from']['judge']}).",
        "",
        f"cos(v_harm, v_ref) per layer: {min(cosines):.3f} … {max(cosines):.3f} "
        f"(layers 0–{len(record['cosine_harmfulness_refusal']) - 1}).",
        "",
        "## Reply inversion ('No' rate on harmless prompts; steering on the instruction tokens)",
        "",
        _markdown_table(["layer", "none", "+harmfulness", "+refusal"], inversion_rows(record)),
        "",
        f"## Latent Guard ({guard_settings_text(guard)}) and baselines: accuracy",
        "",
        _markdown_table(headers, rows),
        "",
        f"Latency per prompt: guard forward {latency['guard_forward'] * 1000:.1f} ms vs a "
        f"{latency['generation_tokens']}-token generation {latency['generation'] * 1000:.0f} ms.",
        "",
        "## Guard settings on the validation prompts",
        "",
        SETTINGS_NOTE,
        "",
        _markdown_table(SETTINGS_HEADERS, settings_rows(record)),
        "",
        f"Model: {provenance.get('model', {}).get('spec', record['model'])}.",
    ]
    return "\n".join(parts) + "\n"


def render_harmfulness_html(record: Mapping[str, Any]) -> str:
    series: dict[str, list[tuple[float, float]]] = {}
    for point in record["belief_scores"]["points"]:
        name = point["set"]
        if (
            name in ("harmful", "harmless")
            or ":harmful" in name
            or name.startswith(("refused", "accepted"))
        ):
            series.setdefault(name, []).append((point["delta_harmful"], point["delta_refuse"]))
    scatter = svg.scatter_chart(
        series, title="Belief scores per prompt", x_label="Δ_harmful (t_inst)",
        y_label="Δ_refuse (t_post-inst)",
    )  # fmt: skip
    wrapped_harmless: dict[str, list[tuple[float, float]]] = {}
    for point in record["belief_scores"]["points"]:
        if (
            point["set"] == "harmless"
            or point["set"].endswith(":harmless")
            or point["set"] == "over_refusal"
        ):
            wrapped_harmless.setdefault(point["set"], []).append(
                (point["delta_harmful"], point["delta_refuse"])
            )
    control = svg.scatter_chart(
        wrapped_harmless, title="Control: harmless prompts, plain and wrapped",
        x_label="Δ_harmful (t_inst)", y_label="Δ_refuse (t_post-inst)",
    )  # fmt: skip
    cosine = svg.line_chart(
        record["cosine_harmfulness_refusal"], title="cos(v_harm, v_ref) per layer",
        x_label="layer", y_label="cosine",
    )  # fmt: skip
    headers, rows = classifier_rows(record)
    guard = record["guard"]
    body = [
        f"<h1>Harmfulness is not refusal — {_e(str(record['model']))}</h1>",
        "<p>Groups by the model's own greedy completions: "
        + ", ".join(f"{_e(k.replace('_', ' '))} <b>{v}</b>" for k, v in record["groups"].items())
        + "</p>",
        img(cosine, "cosine of the harmfulness and refusal directions per layer"),
        img(scatter, "belief scores by group and by wrapper"),
        img(control, "belief scores of harmless prompts, plain and wrapped"),
        "<h2>Reply inversion</h2><p>'No' rate on harmless prompts (count; 95% CI; affirmative "
        "replies — Certainly or Yes — and invalid first tokens counted apart) unsteered and "
        "with each direction added on the instruction tokens.</p>",
        table(
            ["layer", "none", "+harmfulness", "+refusal"],
            [[td(_e(c)) for c in row] for row in inversion_rows(record)],
        ),
        "<h2>Latent Guard and baselines</h2>"
        f"<p>Guard: {_e(guard_settings_text(guard))}. Accuracy per set (flagged harmful / n; "
        "95% CI).</p>",
        table([_e(h) for h in headers], [[td(_e(c)) for c in row] for row in rows]),
        f"<h2>Guard settings on the validation prompts</h2><p>{_e(SETTINGS_NOTE)}</p>",
        table(
            [_e(h) for h in SETTINGS_HEADERS],
            [[td(_e(c)) for c in row] for row in settings_rows(record)],
        ),
    ]
    return page(f"harmfulness — {record['model']}", "".join(body))
