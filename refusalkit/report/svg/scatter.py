"""A scatter plot of labelled points (one colour per series) with zero lines."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from refusalkit.report.svg.base import (
    axis_labels,
    document,
    escape_text,
    is_finite,
    nice_ticks,
    title_text,
    y_ticks,
)

# Enough distinct colours for the behaviour groups and every wrapper.
PALETTE = (
    "#4c78a8", "#f58518", "#54a24b", "#e45756", "#72b7b2", "#b279a2", "#ff9da6", "#9d755d",
    "#bab0ac", "#eeca3b", "#1f3b73", "#7a0177",
)  # fmt: skip


def scatter_chart(
    series: Mapping[str, Sequence[tuple[float, float]]],
    *,
    title: str,
    x_label: str,
    y_label: str,
) -> str:
    """Each series' (x, y) points as small circles; dashed lines at x = 0 and y = 0."""
    width, height = 720.0, 420.0
    left, right, top, bottom = 62.0, 200.0, 34.0, 56.0
    pw, ph = width - left - right, height - top - bottom
    points = [
        p for values in series.values() for p in values if is_finite(p[0]) and is_finite(p[1])
    ]
    xs = [p[0] for p in points] + [0.0]
    ys = [p[1] for p in points] + [0.0]
    x_lo, x_hi = min(xs), max(xs)
    y_lo, y_hi = min(ys), max(ys)
    x_pad = (x_hi - x_lo) * 0.05 or 0.05
    y_pad = (y_hi - y_lo) * 0.05 or 0.05
    x_lo, x_hi, y_lo, y_hi = x_lo - x_pad, x_hi + x_pad, y_lo - y_pad, y_hi + y_pad

    def px(x: float) -> float:
        return left + (x - x_lo) / (x_hi - x_lo) * pw

    def py(y: float) -> float:
        return top + ph - (y - y_lo) / (y_hi - y_lo) * ph

    body = [
        title_text(title, 20),
        f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="none" stroke="#999999"/>',
        y_ticks(nice_ticks(y_lo, y_hi), left, pw, py),
        *(
            f'<text x="{px(t):.1f}" y="{top + ph + 16}" text-anchor="middle" font-size="11">'
            f"{t:g}</text>"
            for t in nice_ticks(x_lo, x_hi)
        ),
        f'<line x1="{px(0):.1f}" y1="{top}" x2="{px(0):.1f}" y2="{top + ph}" stroke="#666666" '
        'stroke-dasharray="4 3"/>',
        f'<line x1="{left}" y1="{py(0):.1f}" x2="{left + pw}" y2="{py(0):.1f}" stroke="#666666" '
        'stroke-dasharray="4 3"/>',
        axis_labels(left + pw / 2, height - 14, top + ph / 2, x_label, y_label),
    ]
    for k, (name, values) in enumerate(series.items()):
        fill = PALETTE[k % len(PALETTE)]
        body += [
            f'<circle cx="{px(x):.1f}" cy="{py(y):.1f}" r="2.6" fill="{fill}" fill-opacity="0.7"/>'
            for x, y in values
            if is_finite(x) and is_finite(y)
        ]
        legend_y = top + 14 * k + 6
        body.append(
            f'<circle cx="{left + pw + 16}" cy="{legend_y}" r="4" fill="{fill}"/>'
            f'<text x="{left + pw + 26}" y="{legend_y + 4}" font-size="11">'
            f"{escape_text(name)} ({len(values)})</text>"
        )
    return document(width, height, body)
