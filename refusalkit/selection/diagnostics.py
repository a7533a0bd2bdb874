"""Why the pick is the pick: its rank among every scored candidate, and what each filter removed
from above it.

A pick that ranks 10th by score because the nine above it failed the KL filter is a different
result from a pick that was simply the best: the user should see it without reading the heatmaps.
Pure functions over the candidate records of ``selection.json``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

# Statuses that mean "removed by a filter" (as in selection.json), with the filter's name.
FILTER_NAMES = {
    "kl": "KL",
    "layer": "layer",
    "median_peak": "median-peak",
    "zero": "zero-direction",
    "induce": "induce",
    "nan": "NaN-score",
}
# The pick is flagged when this many or more scored candidates rank above it: the score ordering
# is then decided by the filters, not by the method's criterion.
WARN_RANK_ABOVE = 3
SHOWN_PER_FILTER = 3


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)


def selection_diagnostics(
    record: Mapping[str, Any], *, score_key: str, higher_is_better: bool, kl_threshold: float
) -> dict[str, Any]:
    """The pick's rank among every candidate with a finite score (1 = best by the method's
    criterion ``score_key``, whatever the filters), and for each filter the candidates it removed
    that score better than the pick: how many, the best few, and (for KL) the range of their KL."""
    candidates: Sequence[Mapping[str, Any]] = record["candidates"]
    scored = [c for c in candidates if _finite(c.get(score_key))]
    sign = -1.0 if higher_is_better else 1.0
    ordered = sorted(scored, key=lambda c: (sign * c[score_key], c["layer"], c["position"]))
    pick = (record["position"], record["layer"])
    rank = next(i for i, c in enumerate(ordered, 1) if (c["position"], c["layer"]) == pick)
    above = ordered[: rank - 1]
    removed: dict[str, Any] = {}
    for status, name in FILTER_NAMES.items():
        hits = [c for c in above if c.get("status") == status]
        if not hits:
            continue
        entry: dict[str, Any] = {
            "filter": name,
            "count": len(hits),
            "best": [
                {
                    "position": c["position"],
                    "layer": c["layer"],
                    "score": c[score_key],
                    "kl": c.get("kl"),
                }
                for c in hits[:SHOWN_PER_FILTER]
            ],
        }
        kls = [c["kl"] for c in hits if _finite(c.get("kl"))]
        if status == "kl" and kls:
            entry["kl_range"] = [min(kls), max(kls)]
            entry["kl_threshold"] = kl_threshold
        removed[status] = entry
    return {
        "rank": rank,
        "n_scored": len(scored),
        "best_score": ordered[0][score_key] if ordered else None,
        "removed_above_pick": removed,
        "warning": _warning(rank, len(scored), removed, record["score"], ordered[0][score_key]),
    }


def describe_removed(entry: Mapping[str, Any]) -> str:
    """ "13 failed the KL filter (KL 0.100–2.366 > 0.1)": one entry of ``removed_above_pick``."""
    text = f"{entry['count']} failed the {entry['filter']} filter"
    if "kl_range" in entry:
        low, high = entry["kl_range"]
        text += f" (KL {low:.3f}–{high:.3f} > {entry['kl_threshold']:g})"
    return text


def _warning(
    rank: int,
    n_scored: int,
    removed: Mapping[str, Any],
    pick_score: float,
    best_score: float,
) -> str | None:
    if rank - 1 < WARN_RANK_ABOVE:
        return None
    parts = [describe_removed(entry) for entry in removed.values()]
    return (
        f"the pick ranks {rank} of {n_scored} by score ({pick_score:.4f}; best "
        f"{best_score:.4f}): of the {rank - 1} candidates above it, "
        + "; ".join(parts)
        + " — a pick this far down may not act on refusal; check the verdict"
    )
