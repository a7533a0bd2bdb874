"""The geometry run's reports: ``geometry.md`` and a self-contained ``report.html`` (cosine heatmap
in clustering order, scree plot, cross-ablation heatmap, subspace curve, cone distribution)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from refusalkit.report import svg
from refusalkit.report.html.elements import img, table, td
from refusalkit.report.html.page import page
from refusalkit.report.svg import escape_text as _e


def _reordered(matrix: Sequence[Sequence[float]], order: Sequence[int]) -> list[list[float]]:
    return [[matrix[i][j] for j in order] for i in order]


def _markdown_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def cross_rows(record: Mapping[str, Any]) -> list[list[str]]:
    """Rows: the ablated category; columns: the tested category (count/n, mean log-odds)."""
    cross = record["cross_ablation"]
    baseline = zip(
        cross["baseline_refusal_count"], cross["n"], cross["baseline_mean_log_odds"], strict=True
    )
    rows = [["none (baseline)", *(f"{c}/{n} ({o:+.2f})" for c, n, o in baseline)]]
    for name, counts, odds in zip(
        record["categories"], cross["refusal_count"], cross["mean_log_odds"], strict=True
    ):
        cells = (f"{c}/{n} ({o:+.2f})" for c, n, o in zip(counts, cross["n"], odds, strict=True))
        rows.append([f"ablate {name}", *cells])
    return rows


def subspace_rows(record: Mapping[str, Any]) -> list[list[str]]:
    rows = []
    for row in [*record["subspace"], {**record["global_direction"], "k": "global"}]:
        low, high = row["harmful_refusal_ci95"]
        rate = f"{row['harmful_refusal_rate']:.2f}; {low:.2f}–{high:.2f}"
        rows.append([
            f"top-{row['k']}" if row["k"] != "global" else "global direction",
            f"{row['harmful_refusal_count']} ({rate})",
            f"{row['harmful_mean_log_odds']:+.2f}",
            f"{row['harmless_kl']:.3f}",
        ])  # fmt: skip
    return rows


def render_geometry_markdown(record: Mapping[str, Any]) -> str:
    cats = record["categories"]
    pairs = [record["cosine"][i][j] for i in range(len(cats)) for j in range(i + 1, len(cats))]
    cone = record["cone"]
    summary = record["cross_ablation"]["summary"]
    parts = [
        f"# Refusal geometry — {record['model']}",
        "",
        f"Site: position {record['position']}, layer {record['layer']} ({record['site']}). "
        f"{len(cats)} categories; train prompts per category: "
        + ", ".join(f"{c} {n}" for c, n in record["n_train"].items())
        + (f"; skipped: {record['skipped_categories']}" if record["skipped_categories"] else "")
        + ".",
        "",
        f"Pairwise cosines {min(pairs):.2f} … {max(pairs):.2f} "
        f"(mean {sum(pairs) / len(pairs):.2f}); "
        f"two clusters: {' | '.join(', '.join(g) for g in record['two_clusters'])}. "
        f"Cosine with the global direction: "
        + ", ".join(f"{c} {v:.2f}" for c, v in zip(cats, record["cosine_with_global"], strict=True))
        + ".",
        "",
        "Explained variance (uncentred): "
        + ", ".join(f"{v:.3f}" for v in record["explained_variance"])
        + f"; {record['n_components_90']} components for 90%, participation ratio "
        f"{record['participation_ratio']:.2f}.",
        "",
        "## Cross-category ablation (refused/n on the tested category's test prompts; mean "
        "first-position refusal log-odds)",
        "",
        _markdown_table(["ablated \\ tested", *cats], cross_rows(record)),
        "",
        f"Mean log-odds reduction on the ablated category's own prompts "
        f"{summary['mean_reduction_diagonal']:.2f}, on the others' "
        f"{summary['mean_reduction_off_diagonal']:.2f}; mean |a→b − b→a| asymmetry "
        f"{summary['mean_asymmetry']:.2f}.",
        "",
        "## Subspace ablation (top-k principal directions of the category directions)",
        "",
        _markdown_table(
            ["ablated", "harmful refused (rate; 95% CI)", "mean log-odds", "harmless KL"],
            subspace_rows(record),
        ),
    ]
    if cone.get("log_odds_reduction_quantiles"):
        q = cone["log_odds_reduction_quantiles"]
        parts += [
            "",
            f"Cone check ({cone['n_samples']} non-negative combinations): log-odds reduction "
            f"min {q['q00']:.2f}, median {q['q50']:.2f}, max {q['q100']:.2f} (global direction "
            f"{cone['global_direction_reduction']:.2f}); "
            f"{cone['share_at_least_half_of_global']:.0%} reach at least half of the global "
            "direction's reduction.",
        ]
    return "\n".join(parts) + "\n"


def render_geometry_html(record: Mapping[str, Any]) -> str:
    cats = record["categories"]
    order = [cats.index(c) for c in record["cluster_order"]]
    ordered = [cats[i] for i in order]
    heat = svg.heatmap(
        _reordered(record["cosine"], order), row_labels=ordered, col_labels=ordered,
        title="Cosine between category directions (clustering order)",
    )  # fmt: skip
    scree = svg.line_chart(
        record["explained_variance"], title="Explained variance per component (uncentred)",
        x_label="component", y_label="share",
    )  # fmt: skip
    cross = record["cross_ablation"]
    reduction = [
        [
            cross["baseline_mean_log_odds"][j] - cross["mean_log_odds"][i][j]
            for j in range(len(cats))
        ]
        for i in range(len(cats))
    ]
    cross_heat = svg.heatmap(
        reduction, row_labels=[f"ablate {c}" for c in cats], col_labels=cats,
        title="Refusal log-odds reduction (rows: ablated, columns: tested)",
    )  # fmt: skip
    curve = svg.line_chart(
        [row["harmful_mean_log_odds"] for row in record["subspace"]],
        title="Harmful refusal log-odds with the top-k subspace ablated (x = k − 1)",
        x_label="k − 1", y_label="mean log-odds",
    )  # fmt: skip
    body = [
        f"<h1>Refusal geometry — {_e(str(record['model']))}</h1>",
        f"<p>Position {record['position']}, layer {record['layer']} ({_e(record['site'])}).</p>",
        img(heat, "cosine matrix"),
        img(scree, "scree plot"),
        img(cross_heat, "cross-category ablation"),
        "<h2>Cross-category ablation</h2>",
        table(
            ["ablated \\ tested", *(_e(c) for c in cats)],
            [[td(_e(c)) for c in row] for row in cross_rows(record)],
        ),
        "<h2>Subspace ablation</h2>",
        img(curve, "subspace curve"),
        table(
            ["ablated", "harmful refused", "mean log-odds", "harmless KL"],
            [[td(_e(c)) for c in row] for row in subspace_rows(record)],
        ),
    ]
    cone = record["cone"]
    if cone.get("log_odds_reduction_quantiles"):
        sorted_reductions = sorted(cone["log_odds_reductions"])
        chart = svg.line_chart(
            sorted_reductions, title="Cone check: refusal log-odds reduction per sample (sorted)",
            x_label="sample (sorted)", y_label="reduction",
        )  # fmt: skip
        body += ["<h2>Cone check</h2>", img(chart, "cone check reductions")]
    return page(f"geometry — {record['model']}", "".join(body))
