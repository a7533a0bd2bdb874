"""Line charts: a line over an index with highlighted points, and lines with 95% intervals
over numeric x."""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Sequence

from refusalkit.report.svg.base import (
    PICK,
    SERIES,
    Interval,
    axis_labels,
    document,
    escape_text,
    fmt,
    is_finite,
    nice_ticks,
    series_colour,
    title_text,
    y_ticks,
)


def line_chart(
    ys: Sequence[float | None],
    *,
    title: str,
    x_label: str,
    y_label: str,
    highlight: Collection[int] = (),
    highlight_label: str = "highlighted",
    marker: int | None = None,
    marker_label: str = "marker",
) -> str:
    """A line over x = 0..n-1 (gaps at None/NaN); ``highlight`` points drawn large and red, and an
    optional dashed vertical ``marker`` (e.g. the selected layer)."""
    width, height = 640.0, 300.0
    left, right, top, bottom = 62.0, 20.0, 34.0, 64.0
    pw, ph = width - left - right, height - top - bottom
    n = len(ys)
    finite = [y for y in ys if is_finite(y)]
    lo, hi = (min(finite), max(finite)) if finite else (0.0, 1.0)
    pad = (hi - lo) * 0.08 or 0.05
    lo, hi = lo - pad, hi + pad

    def px(i: float) -> float:
        return left + (i / (n - 1) * pw if n > 1 else pw / 2)

    def py(y: float) -> float:
        return top + ph - (y - lo) / (hi - lo) * ph

    out = [
        title_text(title, 20),
        f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="none" stroke="#999999"/>',
        y_ticks(nice_ticks(lo, hi), left, pw, py),
        *(
            f'<text x="{px(i):.1f}" y="{top + ph + 16}" text-anchor="middle" font-size="11">'
            f"{i}</text>"
            for i in range(0, n, max(1, math.ceil(n / 16)))
        ),
        axis_labels(left + pw / 2, top + ph + 32, top + ph / 2, x_label, y_label),
    ]
    if marker is not None and 0 <= marker < n:
        out.append(
            f'<line class="marker" x1="{px(marker):.1f}" x2="{px(marker):.1f}" y1="{top}" '
            f'y2="{top + ph}" stroke="#333333" stroke-dasharray="5 4"/>'
        )
    out += _line_segments(ys, px, py)
    out += _line_points(ys, px, py, highlight)
    shown_marker = marker_label if marker is not None else None
    out.append(_line_legend(left, height - 14, highlight_label, shown_marker))
    return document(width, height, out)


def _line_segments(
    ys: Sequence[float | None], px: Callable[[float], float], py: Callable[[float], float]
) -> list[str]:
    """One polyline per run of finite values, so a missing value leaves a visible gap."""
    out = []
    segment: list[str] = []
    for i, y in enumerate([*ys, None]):
        if is_finite(y):
            segment.append(f"{px(i):.1f},{py(y):.1f}")
            continue
        if segment:
            out.append(
                f'<polyline points="{" ".join(segment)}" fill="none" stroke="{SERIES[0]}" '
                'stroke-width="2"/>'
            )
        segment = []
    return out


def _line_points(
    ys: Sequence[float | None],
    px: Callable[[float], float],
    py: Callable[[float], float],
    highlight: Collection[int],
) -> list[str]:
    out = []
    for i, y in enumerate(ys):
        if is_finite(y):
            big = i in highlight
            out.append(
                f'<circle class="{"highlight" if big else "point"}" cx="{px(i):.1f}" '
                f'cy="{py(y):.1f}" r="{5 if big else 3}" '
                f'fill="{PICK if big else SERIES[0]}"/>'
            )
    return out


def _line_legend(left: float, ly: float, highlight_label: str, marker_label: str | None) -> str:
    out = (
        f'<circle cx="{left + 6}" cy="{ly - 4}" r="5" fill="{PICK}"/>'
        f'<text x="{left + 16}" y="{ly}" font-size="11">{escape_text(highlight_label)}</text>'
    )
    if marker_label is not None:
        out += (
            f'<line x1="{left + 250}" x2="{left + 272}" y1="{ly - 4}" y2="{ly - 4}" '
            f'stroke="#333333" stroke-dasharray="5 4"/><text x="{left + 278}" y="{ly}" '
            f'font-size="11">{escape_text(marker_label)}</text>'
        )
    return out


# A dashed horizontal reference line: (index of the series whose colour it takes, y, legend label).
Reference = tuple[int, float, str]


def interval_line_chart(
    xs: Sequence[float],
    series: Sequence[tuple[str, Sequence[Interval]]],
    *,
    title: str,
    x_label: str,
    y_label: str,
    references: Sequence[Reference] = (),
    marker: float | None = None,
    marker_label: str = "marker",
    y_max: float = 1.0,
) -> str:
    """Lines over numeric ``xs``, placed by value (uneven spacing stays uneven) and labelled with
    the values themselves. ``series[s] = (name, [(value, low, high) for each x])``: every point
    gets 95%-interval whiskers and the points are joined in x order as measured, never smoothed,
    with gaps at missing values. Series are nudged a few pixels apart sideways so whiskers at the
    same x stay distinguishable. ``references`` are dashed horizontal lines in their series'
    colour; ``marker`` a dashed vertical line at that x (e.g. the best α)."""
    width, left, right, top, ph = 640.0, 62.0, 20.0, 34.0, 230.0
    pw = width - left - right
    finite_xs = sorted(x for x in xs if is_finite(x))
    lo, hi = (finite_xs[0], finite_xs[-1]) if finite_xs else (0.0, 1.0)
    pad = (hi - lo) * 0.06 or 1.0  # a single x ends up in the middle
    lo, hi = lo - pad, hi + pad

    def px(x: float) -> float:
        return left + (x - lo) / (hi - lo) * pw

    def py(y: float) -> float:
        return top + ph - min(max(y, 0.0), y_max) / y_max * ph

    out = [
        title_text(title, 20),
        f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="none" stroke="#999999"/>',
        axis_labels(left + pw / 2, top + ph + 34, top + ph / 2, x_label, y_label),
        y_ticks(nice_ticks(0.0, y_max), left, pw, py),
        *_x_values(finite_xs, px, top, ph),
        *_reference_lines(references, left, pw, py),
    ]
    if is_finite(marker) and lo <= marker <= hi:
        out.append(
            f'<line class="marker" x1="{px(marker):.1f}" x2="{px(marker):.1f}" y1="{top}" '
            f'y2="{top + ph}" stroke="#333333" stroke-dasharray="2 3" stroke-width="1.5"/>'
        )
    order = sorted((i for i, x in enumerate(xs) if is_finite(x)), key=lambda i: xs[i])
    for s, (_, points) in enumerate(series):
        dx = (s - (len(series) - 1) / 2) * 4.0
        at = [(px(xs[i]) + dx, points[i] if i < len(points) else (None, None, None)) for i in order]
        out += _interval_series(s, at, py)
    keys = _interval_keys(series, references, marker_label if is_finite(marker) else None)
    legend, ky = _legend_rows(keys, left, width - right, top + ph + 58)
    out += legend
    out.append(
        f'<text x="{left}" y="{ky + 20:.0f}" font-size="10" fill="#555555">whiskers: 95% '
        "interval</text>"
    )
    return document(width, ky + 30, out)


def _x_values(
    finite_xs: Sequence[float], px: Callable[[float], float], top: float, ph: float
) -> list[str]:
    """A faint vertical line at every measured x, labelled with its value."""
    out = []
    last_label = -math.inf
    for x in finite_xs:
        out.append(
            f'<line x1="{px(x):.1f}" x2="{px(x):.1f}" y1="{top}" y2="{top + ph}" stroke="#f0f0f0"/>'
        )
        if px(x) - last_label >= 26:  # skip a label that would overprint its neighbour
            last_label = px(x)
            out.append(
                f'<text x="{px(x):.1f}" y="{top + ph + 16}" text-anchor="middle" '
                f'font-size="11">{fmt(x)}</text>'
            )
    return out


def _reference_lines(
    references: Sequence[Reference], left: float, pw: float, py: Callable[[float], float]
) -> list[str]:
    return [
        f'<line class="reference" x1="{left}" x2="{left + pw}" y1="{py(y):.1f}" '
        f'y2="{py(y):.1f}" stroke="{series_colour(s)}" stroke-width="1.5" '
        'stroke-dasharray="6 4"/>'
        for s, y, _ in references
        if is_finite(y)
    ]


def _interval_series(
    s: int, at: Sequence[tuple[float, Interval]], py: Callable[[float], float]
) -> list[str]:
    """Series ``s`` at its points (x in pixels, in x order): its lines, then points and whiskers.
    One polyline per run of measured values, so a missing value leaves a visible gap."""
    colour_s = series_colour(s)
    runs: list[list[str]] = [[]]
    dots: list[str] = []
    for cx, (value, low, high) in at:
        if not is_finite(value):
            runs.append([])
            continue
        cy = py(value)
        runs[-1].append(f"{cx:.1f},{cy:.1f}")
        dots.append(
            f'<circle class="point" data-series="{s}" cx="{cx:.1f}" cy="{cy:.1f}" r="3.5" '
            f'fill="{colour_s}"/>'
        )
        if is_finite(low) and is_finite(high):
            dots.append(
                f'<path class="whisker" d="M{cx:.1f},{py(low):.1f}V{py(high):.1f}'
                f'M{cx - 3:.1f},{py(low):.1f}h6M{cx - 3:.1f},{py(high):.1f}h6" '
                f'stroke="{colour_s}" stroke-width="1.3" fill="none"/>'
            )
    lines = [
        f'<polyline class="series" points="{" ".join(run)}" fill="none" '
        f'stroke="{colour_s}" stroke-width="2"/>'
        for run in runs
        if len(run) > 1
    ]
    return lines + dots


# A legend key: (its shape, drawn around (0, 0), its label).
_Key = tuple[str, str]


def _interval_keys(
    series: Sequence[tuple[str, Sequence[Interval]]],
    references: Sequence[Reference],
    marker_label: str | None,
) -> list[_Key]:
    """A key per series, per drawn reference line and for the marker (None: no marker)."""
    keys = [
        (f'<line x1="0" x2="22" y1="-4" y2="-4" stroke="{series_colour(s)}" stroke-width="2"/>'
         f'<circle cx="11" cy="-4" r="3.5" fill="{series_colour(s)}"/>', name)
        for s, (name, _) in enumerate(series)
    ]  # fmt: skip
    keys += [
        (f'<line x1="0" x2="22" y1="-4" y2="-4" stroke="{series_colour(s)}" stroke-width="1.5" '
         'stroke-dasharray="6 4"/>', label)
        for s, y, label in references if is_finite(y)
    ]  # fmt: skip
    if marker_label is not None:
        keys.append(
            ('<line x1="11" x2="11" y1="-12" y2="4" stroke="#333333" stroke-dasharray="2 3" '
             'stroke-width="1.5"/>', marker_label)
        )  # fmt: skip
    return keys


def _legend_rows(
    keys: Sequence[_Key], left: float, right: float, ky: float
) -> tuple[list[str], float]:
    """The keys left to right from ``left``, wrapped into rows before ``right``; text widths
    estimated (≈6.6 px a character at 11 px). Also the last row's y."""
    out = []
    kx = left
    for shape, label in keys:
        key_w = 36 + 6.6 * len(label)
        if kx > left and kx + key_w > right:
            kx, ky = left, ky + 18
        out.append(
            f'<g transform="translate({kx:.0f} {ky:.0f})">{shape}<text x="28" y="0" '
            f'font-size="11">{escape_text(label)}</text></g>'
        )
        kx += key_w
    return out, ky
