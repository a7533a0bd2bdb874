"""The selection: the layer-similarity curve with L_low, the position × layer heatmaps of every
candidate's scores, and the pick in facts."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from refusalkit.report import svg
from refusalkit.report.html.elements import (
    as_text,
    img,
    number,
    token_html,
)
from refusalkit.report.svg import escape_text as _e
from refusalkit.runs.records import (
    SelectionSummary,
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


# A candidate placed in the heatmaps: (row, layer, the candidate as selection.json records it).
_Cell = tuple[int, int, Mapping[str, Any]]


def selection_plots(selection: Mapping[str, Any], fallback_tokens: Sequence[Any]) -> str:
    candidates = [c for c in selection.get("candidates") or [] if isinstance(c, dict)]
    similarities = selection.get("layer_similarities") or []
    charts = _layer_curve(selection, similarities)
    if candidates:
        tokens = list(selection.get("position_tokens") or fallback_tokens)
        charts += _heatmaps(selection, candidates, len(similarities), tokens)
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


def _layer_curve(selection: Mapping[str, Any], similarities: Sequence[Any]) -> list[str]:
    """The harmful/harmless similarity per layer with L_low and the selected layer; none where
    the file records no similarities."""
    if not similarities:
        return []
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
    return [img(chart, f"Layer similarity curve; L_low layers {l_low} highlighted")]


def _heatmaps(
    selection: Mapping[str, Any],
    candidates: list[dict[str, Any]],
    n_similarities: int,
    tokens: Sequence[Any],
) -> list[str]:
    """One position × layer heatmap per score the selector records."""
    positions = sorted({int(c["position"]) for c in candidates if "position" in c})
    n_layers = max([int(c.get("layer", 0)) + 1 for c in candidates] + [n_similarities])
    rows = {p: i for i, p in enumerate(positions)}
    labels = [f"{p} {_token_label(tokens, p)}" for p in positions]
    pick = _pick_cell(selection, rows)
    cells: list[_Cell] = [
        (rows[c["position"]], int(c.get("layer", -1)), c) for c in candidates if "position" in c
    ]
    filtered = [(i, j) for i, j, c in cells if c.get("status") in _FILTERED]
    charts = []
    for key, title, higher_is_better in _metrics(candidates):
        chart = svg.heatmap(
            _grid(cells, key, len(positions), n_layers), labels,
            [str(l) for l in range(n_layers)], title=title, pick=pick, filtered=filtered,
            higher_is_better=higher_is_better,
        )  # fmt: skip
        charts.append(img(chart, f"Heatmap over position × layer of {title}"))
    return charts


def _token_label(tokens: Sequence[Any], position: int) -> str:
    # Positions are -P..-1 and position_tokens lists the tokens for -P..-1 in order.
    if -len(tokens) <= position < 0:
        return repr(tokens[len(tokens) + position])[:18]
    return ""


def _pick_cell(selection: Mapping[str, Any], rows: Mapping[int, int]) -> tuple[int, int] | None:
    """The pick's (row, layer) in the heatmaps; none to mark when the selection failed (every
    candidate filtered out)."""
    position, layer = selection.get("position"), selection.get("layer")
    if isinstance(position, int) and position in rows and isinstance(layer, int):
        return (rows[position], layer)
    return None


def _metrics(candidates: list[dict[str, Any]]) -> tuple[tuple[str, str, bool], ...]:
    """Which selector wrote the file, from the scores its candidates carry."""
    if any("s_comply" in c for c in candidates):
        return _COSMIC_METRICS
    if any("bypass" in c for c in candidates):
        return _REFUSAL_SCORE_METRICS
    return ()


def _grid(cells: list[_Cell], key: str, n_rows: int, n_layers: int) -> list[list[float | None]]:
    grid: list[list[float | None]] = [[None] * n_layers for _ in range(n_rows)]
    for i, j, c in cells:
        value = c.get(key)
        if 0 <= j < n_layers and isinstance(value, int | float):
            grid[i][j] = float(value)
    return grid


def pick_facts(pick: SelectionSummary, l_low: Any, tokens: Sequence[Any]) -> list[tuple[str, str]]:
    """The pick in facts; ``l_low``: the evaluation layers from ``selection.json``, if any."""
    token = ""
    if -len(tokens) <= pick.position < 0:
        token = f" (token <code>{token_html(tokens[len(tokens) + pick.position])}</code>)"
    facts = [
        ("method", _e(f"{pick.method}-{pick.steering.upper()}")),
        ("pick", f"position {number(pick.position)}{token}, layer {number(pick.layer)}"),
        ("score", number(pick.score)),
        ("KL", number(pick.kl)),
        *((key, number(value)) for key, value in pick.scores.items()),
    ]
    if pick.n_candidates is not None:
        facts.append(
            ("kept by the filters", f"{number(pick.n_kept)} of {number(pick.n_candidates)}")
        )
    if l_low is not None:
        facts.append(("L_low", as_text(l_low)))
    return facts


def selected_pick(record: Mapping[str, Any]) -> SelectionSummary | None:
    """The pick of a ``selection.json``-style file; none where the file is missing or records a
    selection that found nothing."""
    return SelectionSummary.from_dict(record) if record and "error" not in record else None
