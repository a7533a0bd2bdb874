"""Sample completions: baseline and intervention side by side, with every judge's verdict."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from refusalkit.report.html.elements import (
    as_dict,
    number,
    table,
    td,
)
from refusalkit.report.svg import escape_text as _e

# completions.jsonl keys shown as columns or badges of their own, or not verdicts at all; any
# other bool/number key (e.g. refusal_log_odds) is shown as a judge verdict.
_ROW_KEYS = frozenset(
    {"set", "condition", "intervention", "category", "prompt", "completion", "refusal"}
    | {"degenerate", "degenerate_reason", "judges", "n_tokens", "alpha"}
)
_SAMPLES_PER_SET = 4


def verdict_badges(row: Mapping[str, Any]) -> str:
    badges = []
    if "refusal" in row:
        yes = bool(row["refusal"])
        badges.append(
            f'<span class="badge {"yes" if yes else "no"}">refusal: {"yes" if yes else "no"}</span>'
        )
    if row.get("degenerate"):
        reason = f": {_e(str(row['degenerate_reason']))}" if row.get("degenerate_reason") else ""
        badges.append(f'<span class="badge warn">degenerate{reason}</span>')
    verdicts = dict(as_dict(row.get("judges")))
    verdicts.update({k: v for k, v in row.items() if k not in _ROW_KEYS})
    for name, verdict in verdicts.items():
        if isinstance(verdict, bool):
            text = "yes" if verdict else "no"
        elif isinstance(verdict, int | float):
            text = number(verdict, 3)
        else:
            continue
        badges.append(f'<span class="badge">{_e(str(name))}: {text}</span>')
    return "".join(badges)


def samples(rows: list[dict[str, Any]], per_set: int = _SAMPLES_PER_SET) -> str:
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
                td(f'<div class="completion">{_e(prompt)}</div><span class="note">'
                    f"{_e(str(any_row.get('category', '')))}</span>"),
            ]  # fmt: skip
            for row in (base, inter):
                cells.append(
                    td(
                        f'<div class="completion">{_e(str(row.get("completion", "")))}</div>'
                        + verdict_badges(row)
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
            + table(["prompt (category)", "baseline", "with intervention"], table_rows, "samples")
        )
    return "".join(out) or '<p class="note">No completions recorded.</p>'
