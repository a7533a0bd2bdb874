"""Small SVG charts as pure functions (data in, SVG string out): heatmap, line chart, bar chart,
lines with intervals over numeric x.

Hand-written instead of matplotlib so the report needs no plotting dependency and every chart is a
few kilobytes of text that can be inlined as a data URI. Every chart has explicit width/height so an
``<img>`` gets a non-zero natural size, and uses only generic fonts so it renders offline.
"""

from __future__ import annotations

import base64
import math
import re
from collections.abc import Collection, Sequence
from html import escape
from typing import TypeGuard

# (value, interval low, interval high); None where unknown.
Interval = tuple[float | None, float | None, float | None]

# Sequential ramp (pale → dark blue) used for every heatmap: light = low, dark = high.
_RAMP = ((247, 252, 240), (168, 221, 181), (67, 162, 202), (8, 104, 172), (8, 29, 88))
_NONE_FILL = "#c8c8c8"  # cell without a value (null / NaN)
_PICK = "#e8112d"  # outline of the selected candidate; red stands out against the blue ramp
_SERIES = ("#4c78a8", "#f58518", "#54a24b", "#b279a2", "#9d755d")
_FONT = "font-family:DejaVu Sans,Arial,Helvetica,sans-serif;font-size:12px"
# XML 1.0 forbids most control characters even when escaped; tokens can contain them.
_XML_INVALID = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


def escape_text(s: str) -> str:
    """Escape text for SVG or HTML: entities, and control characters (invalid in XML, invisible
    in HTML) shown as ``\\xNN`` so odd tokens stay visible instead of breaking the document."""
    return escape(_XML_INVALID.sub(lambda m: f"\\x{ord(m.group()):02x}", s))


def _finite(x: float | None) -> TypeGuard[float]:
    return x is not None and math.isfinite(x)


def fmt(x: float | None, digits: int = 3) -> str:
    """Compact number for labels; '–' for a missing value."""
    return f"{x:.{digits}g}" if _finite(x) else "–"


def colour(t: float) -> str:
    """Colour of the ramp at t ∈ [0, 1] (clamped), by linear interpolation between anchors."""
    t = min(1.0, max(0.0, t)) * (len(_RAMP) - 1)
    i = min(int(t), len(_RAMP) - 2)
    a, b, f = _RAMP[i], _RAMP[i + 1], t - i
    return "#" + "".join(f"{round(x + (y - x) * f):02x}" for x, y in zip(a, b, strict=True))


def _svg(width: float, height: float, body: list[str], defs: str = "") -> str:
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0f}" height="{height:.0f}" '
        f'viewBox="0 0 {width:.0f} {height:.0f}" style="{_FONT}">'
        f'<rect width="100%" height="100%" fill="#ffffff"/>{defs}{"".join(body)}</svg>'
    )


def data_uri(svg: str) -> str:
    """The SVG as a base64 data URI, so the report needs no separate image files."""
    return "data:image/svg+xml;base64," + base64.b64encode(svg.encode("utf-8")).decode("ascii")


def nice_ticks(low: float, high: float, target: int = 5) -> list[float]:
    """Round tick values (steps of 1, 2 or 5 × 10^k) covering [low, high]."""
    if not (math.isfinite(low) and math.isfinite(high)) or high <= low:
        return [low] if math.isfinite(low) else [0.0]
    raw = (high - low) / target
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= raw)
    first = math.ceil(low / step - 1e-9) * step
    count = math.floor((high - first) / step + 1e-9) + 1
    return [round(first + k * step, 12) for k in range(count)]


def heatmap(
    values: Sequence[Sequence[float | None]],
    row_labels: Sequence[str],
    col_labels: Sequence[str],
    *,
    title: str,
    pick: tuple[int, int] | None = None,
    filtered: Collection[tuple[int, int]] = (),
    higher_is_better: bool = True,
) -> str:
    """Grid of ``values[row][col]``: one ``rect.cell`` per cell, None/NaN as plain grey.

    Dark always means better (``higher_is_better=False`` flips the ramp), so the eye finds good
    candidates the same way in every map whatever the metric's sign convention.

    ``pick`` (row, col) gets a thick red outline; ``filtered`` cells keep their colour under a
    white wash and hatching, so a reader sees both the score and that a filter removed it.
    A colour bar with the min and max value sits below the grid.
    """
    n_rows, n_cols = len(values), max((len(r) for r in values), default=0)
    finite = [v for row in values for v in row if _finite(v)]
    low, high = (min(finite), max(finite)) if finite else (0.0, 0.0)
    span = high - low

    def shade(v: float) -> str:
        t = (v - low) / span if span > 0 else 0.5
        return colour(t if higher_is_better else 1 - t)

    cw = max(12.0, min(40.0, 560.0 / max(n_cols, 1)))  # cell width: fit ~560 px, stay legible
    ch = 22.0
    left = 14 + 7.0 * max((len(label) for label in row_labels), default=0)
    top, x0 = 54.0, left + 6
    grid_w, grid_h = cw * n_cols, ch * n_rows
    # Wide enough for the title (bold 14 px ≈ 8.2 px a character) and the legend keys.
    width = max(x0 + grid_w + 16, 16 + 8.2 * len(title), x0 + 340)
    height = top + grid_h + 34 + 62

    defs = (
        '<defs><pattern id="hatch" width="6" height="6" patternUnits="userSpaceOnUse" '
        'patternTransform="rotate(45)"><rect width="6" height="6" fill="#ffffff" '
        'fill-opacity="0.55"/><line x1="0" y1="0" x2="0" y2="6" stroke="#555555" '
        'stroke-width="1.6"/></pattern><linearGradient id="ramp">'
        + "".join(f'<stop offset="{k / 10:.1f}" stop-color="{colour(k / 10)}"/>' for k in range(11))
        + "</linearGradient></defs>"
    )
    out = [f'<text x="8" y="18" font-size="14" font-weight="bold">{escape_text(title)}</text>']
    out.append(
        f'<text x="{x0 + grid_w / 2:.1f}" y="36" text-anchor="middle" fill="#444444">layer</text>'
    )
    # The pick's row and column labels are drawn red and bold, so the pick is easy to find even
    # when cells are narrow; other layer labels are thinned out when cells get narrow.
    pick_row, pick_col = pick if pick is not None else (-1, -1)
    highlight = f' fill="{_PICK}" font-weight="bold"'
    label_every = max(1, math.ceil(22 / cw))
    for j, label in enumerate(col_labels[:n_cols]):
        near_pick = j != pick_col and abs(j - pick_col) < label_every
        if (j % label_every == 0 and not near_pick) or j == pick_col:
            x = x0 + (j + 0.5) * cw
            out.append(
                f'<text x="{x:.1f}" y="{top - 5:.1f}" text-anchor="middle" font-size="10"'
                f"{highlight if j == pick_col else ''}>{escape_text(label)}</text>"
            )
    for i, row in enumerate(values):
        y = top + i * ch
        if i < len(row_labels):
            out.append(
                f'<text x="{x0 - 6:.1f}" y="{y + ch / 2 + 4:.1f}" text-anchor="end" '
                f'font-family="DejaVu Sans Mono,monospace"{highlight if i == pick_row else ""}>'
                f"{escape_text(row_labels[i])}</text>"
            )
        for j in range(n_cols):
            v = row[j] if j < len(row) else None
            fill = shade(v) if _finite(v) else _NONE_FILL
            out.append(
                f'<rect class="cell" x="{x0 + j * cw:.1f}" y="{y:.1f}" width="{cw:.1f}" '
                f'height="{ch:.1f}" fill="{fill}" stroke="#ffffff" stroke-width="0.5"/>'
            )
    for i, j in filtered:
        if 0 <= i < n_rows and 0 <= j < n_cols:
            out.append(
                f'<rect class="filtered" x="{x0 + j * cw:.1f}" y="{top + i * ch:.1f}" '
                f'width="{cw:.1f}" height="{ch:.1f}" fill="url(#hatch)"/>'
            )
    if pick is not None and 0 <= pick[0] < n_rows and 0 <= pick[1] < n_cols:
        i, j = pick
        out.append(
            f'<rect class="pick" x="{x0 + j * cw + 1.5:.1f}" y="{top + i * ch + 1.5:.1f}" '
            f'width="{cw - 3:.1f}" height="{ch - 3:.1f}" fill="none" stroke="{_PICK}" '
            'stroke-width="3"/>'
        )

    # Legend: colour bar (light → dark = worse → better) labelled with the extreme values, then
    # keys for pick, filtered and empty cells.
    ly = top + grid_h + 14
    ends = [f"min {fmt(low if finite else None)}", f"max {fmt(high if finite else None)}"]
    if not higher_is_better:
        ends.reverse()
    out.append(
        f'<rect x="{x0:.1f}" y="{ly:.1f}" width="160" height="12" fill="url(#ramp)" '
        'stroke="#888888" stroke-width="0.5"/>'
        f'<text x="{x0:.1f}" y="{ly + 26:.1f}" font-size="11">{ends[0]}</text>'
        f'<text x="{x0 + 160:.1f}" y="{ly + 26:.1f}" font-size="11" text-anchor="end">'
        f'{ends[1]}</text><text x="{x0 + 170:.1f}" y="{ly + 10:.1f}" font-size="11" '
        'fill="#555555">darker = better</text>'
    )
    ky = ly + 40
    keys = [
        (f'fill="none" stroke="{_PICK}" stroke-width="3"', "pick"),
        ('fill="url(#hatch)" stroke="#888888" stroke-width="0.5"', "filtered"),
        (f'fill="{_NONE_FILL}"', "no value"),
    ]
    for k, (style, label) in enumerate(keys):
        kx = x0 + k * 110
        out.append(
            f'<rect x="{kx:.1f}" y="{ky:.1f}" width="16" height="12" {style}/>'
            f'<text x="{kx + 22:.1f}" y="{ky + 10:.1f}" font-size="11">{label}</text>'
        )
    return _svg(width, height, out, defs)


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
    finite = [y for y in ys if _finite(y)]
    lo, hi = (min(finite), max(finite)) if finite else (0.0, 1.0)
    pad = (hi - lo) * 0.08 or 0.05
    lo, hi = lo - pad, hi + pad

    def px(i: float) -> float:
        return left + (i / (n - 1) * pw if n > 1 else pw / 2)

    def py(y: float) -> float:
        return top + ph - (y - lo) / (hi - lo) * ph

    out = [
        f'<text x="8" y="20" font-size="14" font-weight="bold">{escape_text(title)}</text>',
        f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="none" stroke="#999999"/>',
    ]
    for t in nice_ticks(lo, hi):
        out.append(
            f'<line x1="{left}" x2="{left + pw}" y1="{py(t):.1f}" y2="{py(t):.1f}" '
            f'stroke="#e4e4e4"/><text x="{left - 6}" y="{py(t) + 4:.1f}" text-anchor="end" '
            f'font-size="11">{fmt(t)}</text>'
        )
    every = max(1, math.ceil(n / 16))
    for i in range(0, n, every):
        out.append(
            f'<text x="{px(i):.1f}" y="{top + ph + 16}" text-anchor="middle" font-size="11">'
            f"{i}</text>"
        )
    out.append(
        f'<text x="{left + pw / 2:.0f}" y="{top + ph + 32}" text-anchor="middle" '
        f'fill="#444444">{escape_text(x_label)}</text><text transform="translate(16 '
        f'{top + ph / 2:.0f}) rotate(-90)" text-anchor="middle" fill="#444444">'
        f"{escape_text(y_label)}</text>"
    )
    if marker is not None and 0 <= marker < n:
        out.append(
            f'<line class="marker" x1="{px(marker):.1f}" x2="{px(marker):.1f}" y1="{top}" '
            f'y2="{top + ph}" stroke="#333333" stroke-dasharray="5 4"/>'
        )
    # One polyline per run of finite values, so a missing value leaves a visible gap.
    segment: list[str] = []
    for i, y in enumerate([*ys, None]):
        if _finite(y):
            segment.append(f"{px(i):.1f},{py(y):.1f}")
            continue
        if segment:
            out.append(
                f'<polyline points="{" ".join(segment)}" fill="none" stroke="{_SERIES[0]}" '
                'stroke-width="2"/>'
            )
        segment = []
    for i, y in enumerate(ys):
        if _finite(y):
            big = i in highlight
            out.append(
                f'<circle class="{"highlight" if big else "point"}" cx="{px(i):.1f}" '
                f'cy="{py(y):.1f}" r="{5 if big else 3}" '
                f'fill="{_PICK if big else _SERIES[0]}"/>'
            )
    ly = height - 14
    out.append(
        f'<circle cx="{left + 6}" cy="{ly - 4}" r="5" fill="{_PICK}"/>'
        f'<text x="{left + 16}" y="{ly}" font-size="11">{escape_text(highlight_label)}</text>'
    )
    if marker is not None:
        out.append(
            f'<line x1="{left + 250}" x2="{left + 272}" y1="{ly - 4}" y2="{ly - 4}" '
            f'stroke="#333333" stroke-dasharray="5 4"/><text x="{left + 278}" y="{ly}" '
            f'font-size="11">{escape_text(marker_label)}</text>'
        )
    return _svg(width, height, out)


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
        f'<text x="8" y="20" font-size="14" font-weight="bold">{escape_text(title)}</text>',
        f'<text transform="translate(16 {top + ph / 2:.0f}) rotate(-90)" text-anchor="middle" '
        f'fill="#444444">{escape_text(y_label)}</text>',
    ]
    for t in nice_ticks(0.0, y_max):
        out.append(
            f'<line x1="{left}" x2="{left + pw}" y1="{py(t):.1f}" y2="{py(t):.1f}" '
            f'stroke="#e4e4e4"/><text x="{left - 6}" y="{py(t) + 4:.1f}" text-anchor="end" '
            f'font-size="11">{fmt(t)}</text>'
        )
    offset = (pw - group_w * n_groups) / 2
    for g, name in enumerate(groups):
        gx = left + offset + g * group_w + (group_w - n_series * slot) / 2
        for s in range(len(series)):
            value, low, high = bars[g][s] if g < len(bars) and s < len(bars[g]) else (None,) * 3
            x, cx = gx + s * slot, gx + (s + 0.5) * slot
            label_y = py(0.0)
            if _finite(value):
                # At least 2 px tall, so a rate of 0 still shows as a bar, not as nothing.
                bar_top = min(py(value), top + ph - 2)
                label_y = bar_top
                out.append(
                    f'<rect class="bar" x="{x + 3:.1f}" y="{bar_top:.1f}" '
                    f'width="{slot - 6:.1f}" height="{top + ph - bar_top:.1f}" '
                    f'fill="{_SERIES[s % len(_SERIES)]}"/>'
                )
            if _finite(low) and _finite(high):
                label_y = min(label_y, py(high))
                out.append(
                    f'<path class="whisker" d="M{cx:.1f},{py(low):.1f}V{py(high):.1f}'
                    f'M{cx - 5:.1f},{py(low):.1f}h10M{cx - 5:.1f},{py(high):.1f}h10" '
                    'stroke="#222222" stroke-width="1.3" fill="none"/>'
                )
            label = f"{value:.2f}" if _finite(value) else "–"
            out.append(
                f'<text x="{cx:.1f}" y="{label_y - 4:.1f}" text-anchor="middle" '
                f'font-size="10">{label}</text>'
            )
        out.append(
            f'<text x="{gx + n_series * slot / 2:.1f}" y="{top + ph + 16}" text-anchor="middle" '
            f'font-size="11">{escape_text(name)}</text>'
        )
    out.append(
        f'<line x1="{left}" x2="{left + pw}" y1="{top + ph}" y2="{top + ph}" stroke="#333333"/>'
    )
    ly = top + ph + 42
    for s, name in enumerate(series):
        lx = left + legend_x[s]
        out.append(
            f'<rect x="{lx:.0f}" y="{ly - 10}" width="14" height="12" '
            f'fill="{_SERIES[s % len(_SERIES)]}"/><text x="{lx + 20:.0f}" y="{ly}" '
            f'font-size="11">{escape_text(name)}</text>'
        )
    out.append(
        f'<text x="{left}" y="{ly + 20}" font-size="10" fill="#555555">whiskers: 95% interval'
        "</text>"
    )
    return _svg(width, height, out)


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
    finite_xs = sorted(x for x in xs if _finite(x))
    lo, hi = (finite_xs[0], finite_xs[-1]) if finite_xs else (0.0, 1.0)
    pad = (hi - lo) * 0.06 or 1.0  # a single x ends up in the middle
    lo, hi = lo - pad, hi + pad

    def px(x: float) -> float:
        return left + (x - lo) / (hi - lo) * pw

    def py(y: float) -> float:
        return top + ph - min(max(y, 0.0), y_max) / y_max * ph

    def colour_of(s: int) -> str:
        return _SERIES[s % len(_SERIES)]

    out = [
        f'<text x="8" y="20" font-size="14" font-weight="bold">{escape_text(title)}</text>',
        f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="none" stroke="#999999"/>',
        f'<text x="{left + pw / 2:.0f}" y="{top + ph + 34}" text-anchor="middle" '
        f'fill="#444444">{escape_text(x_label)}</text><text transform="translate(16 '
        f'{top + ph / 2:.0f}) rotate(-90)" text-anchor="middle" fill="#444444">'
        f"{escape_text(y_label)}</text>",
    ]
    for t in nice_ticks(0.0, y_max):
        out.append(
            f'<line x1="{left}" x2="{left + pw}" y1="{py(t):.1f}" y2="{py(t):.1f}" '
            f'stroke="#e4e4e4"/><text x="{left - 6}" y="{py(t) + 4:.1f}" text-anchor="end" '
            f'font-size="11">{fmt(t)}</text>'
        )
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
    for s, y, _ in references:
        if _finite(y):
            out.append(
                f'<line class="reference" x1="{left}" x2="{left + pw}" y1="{py(y):.1f}" '
                f'y2="{py(y):.1f}" stroke="{colour_of(s)}" stroke-width="1.5" '
                'stroke-dasharray="6 4"/>'
            )
    if _finite(marker) and lo <= marker <= hi:
        out.append(
            f'<line class="marker" x1="{px(marker):.1f}" x2="{px(marker):.1f}" y1="{top}" '
            f'y2="{top + ph}" stroke="#333333" stroke-dasharray="2 3" stroke-width="1.5"/>'
        )
    order = sorted((i for i, x in enumerate(xs) if _finite(x)), key=lambda i: xs[i])
    for s, (_, points) in enumerate(series):
        dx = (s - (len(series) - 1) / 2) * 4.0
        # One polyline per run of measured values, so a missing value leaves a visible gap.
        runs: list[list[str]] = [[]]
        dots: list[str] = []
        for i in order:
            value, low, high = points[i] if i < len(points) else (None, None, None)
            if not _finite(value):
                runs.append([])
                continue
            cx, cy = px(xs[i]) + dx, py(value)
            runs[-1].append(f"{cx:.1f},{cy:.1f}")
            dots.append(
                f'<circle class="point" data-series="{s}" cx="{cx:.1f}" cy="{cy:.1f}" r="3.5" '
                f'fill="{colour_of(s)}"/>'
            )
            if _finite(low) and _finite(high):
                dots.append(
                    f'<path class="whisker" d="M{cx:.1f},{py(low):.1f}V{py(high):.1f}'
                    f'M{cx - 3:.1f},{py(low):.1f}h6M{cx - 3:.1f},{py(high):.1f}h6" '
                    f'stroke="{colour_of(s)}" stroke-width="1.3" fill="none"/>'
                )
        out += [
            f'<polyline class="series" points="{" ".join(run)}" fill="none" '
            f'stroke="{colour_of(s)}" stroke-width="2"/>'
            for run in runs
            if len(run) > 1
        ]
        out += dots

    # Legend, wrapped into rows; text widths estimated (≈6.6 px a character at 11 px).
    keys = [
        (f'<line x1="0" x2="22" y1="-4" y2="-4" stroke="{colour_of(s)}" stroke-width="2"/>'
         f'<circle cx="11" cy="-4" r="3.5" fill="{colour_of(s)}"/>', name)
        for s, (name, _) in enumerate(series)
    ]  # fmt: skip
    keys += [
        (f'<line x1="0" x2="22" y1="-4" y2="-4" stroke="{colour_of(s)}" stroke-width="1.5" '
         'stroke-dasharray="6 4"/>', label)
        for s, y, label in references if _finite(y)
    ]  # fmt: skip
    if _finite(marker):
        keys.append(
            ('<line x1="11" x2="11" y1="-12" y2="4" stroke="#333333" stroke-dasharray="2 3" '
             'stroke-width="1.5"/>', marker_label)
        )  # fmt: skip
    kx, ky = left, top + ph + 58
    for shape, label in keys:
        key_w = 36 + 6.6 * len(label)
        if kx > left and kx + key_w > width - right:
            kx, ky = left, ky + 18
        out.append(
            f'<g transform="translate({kx:.0f} {ky:.0f})">{shape}<text x="28" y="0" '
            f'font-size="11">{escape_text(label)}</text></g>'
        )
        kx += key_w
    out.append(
        f'<text x="{left}" y="{ky + 20:.0f}" font-size="10" fill="#555555">whiskers: 95% '
        "interval</text>"
    )
    return _svg(width, ky + 30, out)
