"""Grouped bars with 95% interval whiskers."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from refusalkit.report.svg.base import (
    Interval,
    document,
    escape_text,
    is_finite,
    nice_ticks,
    series_colour,
    title_text,
    y_ticks,
)


def bar_chart(
    groups: Sequence[str],
    series: Sequence[str],
    bars: Sequence[Sequence[Interval]],
    *,
    title: str,
    y_label: str,
    y_max: float = 1.0,
) -> str:
    """Grouped bars ``bars[group][series]`` = (value, low, high) with interval whiskers and the
    value printed above each bar; a missing value leaves an empty slot labelled '–'."""
    n_groups, n_series = len(groups), max(len(series), 1)
    slot = 36.0  # per bar: room for a "0.17" label above it
    # Text widths are estimated (≈6.6 px a character at 11 px) since SVG cannot measure text.
    group_w = max(n_series * slot + 26, 12 + 6.6 * max((len(g) for g in groups), default=0))
    legend_x = [0.0]
    for name in series:
        legend_x.append(legend_x[-1] + 40 + 6.6 * len(name))
    left, right, top, bottom = 58.0, 16.0, 34.0, 78.0
    pw, ph = max(group_w * n_groups, 8.2 * len(title) - left + 8, legend_x[-1], 260.0), 220.0
    width, height = left + pw + right, top + ph + bottom

    def py(y: float) -> float:
        return top + ph - min(max(y, 0.0), y_max) / y_max * ph

    out = [
        title_text(title, 20),
        f'<text transform="translate(16 {top + ph / 2:.0f}) rotate(-90)" text-anchor="middle" '
        f'fill="#444444">{escape_text(y_label)}</text>',
        y_ticks(nice_ticks(0.0, y_max), left, pw, py),
    ]
    offset = (pw - group_w * n_groups) / 2
    for g, name in enumerate(groups):
        gx = left + offset + g * group_w + (group_w - n_series * slot) / 2
        for s in range(len(series)):
            bar = bars[g][s] if g < len(bars) and s < len(bars[g]) else (None,) * 3
            x, cx = gx + s * slot, gx + (s + 0.5) * slot
            out += _bar((x, cx), slot, bar, series_colour(s), py, top + ph)
        out.append(
            f'<text x="{gx + n_series * slot / 2:.1f}" y="{top + ph + 16}" text-anchor="middle" '
            f'font-size="11">{escape_text(name)}</text>'
        )
    out.append(
        f'<line x1="{left}" x2="{left + pw}" y1="{top + ph}" y2="{top + ph}" stroke="#333333"/>'
    )
    out += _bar_legend(series, left, legend_x, top + ph + 42)
    return document(width, height, out)


def _bar(
    at: tuple[float, float],
    slot: float,
    bar: Interval,
    fill: str,
    py: Callable[[float], float],
    bottom: float,
) -> list[str]:
    """One bar in its slot (``at``: the slot's left edge and centre): the bar, its whisker and
    its value printed above both."""
    (x, cx), (value, low, high) = at, bar
    label_y = py(0.0)
    out = []
    if is_finite(value):
        # At least 2 px tall, so a rate of 0 still shows as a bar, not as nothing.
        bar_top = min(py(value), bottom - 2)
        label_y = bar_top
        out.append(
            f'<rect class="bar" x="{x + 3:.1f}" y="{bar_top:.1f}" '
            f'width="{slot - 6:.1f}" height="{bottom - bar_top:.1f}" fill="{fill}"/>'
        )
    if is_finite(low) and is_finite(high):
        label_y = min(label_y, py(high))
        out.append(
            f'<path class="whisker" d="M{cx:.1f},{py(low):.1f}V{py(high):.1f}'
            f'M{cx - 5:.1f},{py(low):.1f}h10M{cx - 5:.1f},{py(high):.1f}h10" '
            'stroke="#222222" stroke-width="1.3" fill="none"/>'
        )
    label = f"{value:.2f}" if is_finite(value) else "–"
    out.append(
        f'<text x="{cx:.1f}" y="{label_y - 4:.1f}" text-anchor="middle" '
        f'font-size="10">{label}</text>'
    )
    return out


def _bar_legend(series: Sequence[str], left: float, xs: Sequence[float], ly: float) -> list[str]:
    """A colour key per series at ``left + xs[s]``, then what the whiskers mean."""
    out = []
    for s, name in enumerate(series):
        lx = left + xs[s]
        out.append(
            f'<rect x="{lx:.0f}" y="{ly - 10}" width="14" height="12" '
            f'fill="{series_colour(s)}"/><text x="{lx + 20:.0f}" y="{ly}" '
            f'font-size="11">{escape_text(name)}</text>'
        )
    out.append(
        f'<text x="{left}" y="{ly + 20}" font-size="10" fill="#555555">whiskers: 95% interval'
        "</text>"
    )
    return out
