"""The position × layer heatmap of candidate scores."""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass

from refusalkit.report.svg.base import (
    NONE_FILL,
    PICK,
    colour,
    document,
    escape_text,
    fmt,
    is_finite,
    title_text,
)


@dataclass(frozen=True)
class _Grid:
    """Where a heatmap's cells lie: the grid's top-left corner and the size of one cell."""

    x0: float
    top: float
    cw: float  # cell width
    ch: float  # cell height


# The heatmap's hatching (filtered cells) and colour ramp (its colour bar).
_HEATMAP_DEFS = (
    '<defs><pattern id="hatch" width="6" height="6" patternUnits="userSpaceOnUse" '
    'patternTransform="rotate(45)"><rect width="6" height="6" fill="#ffffff" '
    'fill-opacity="0.55"/><line x1="0" y1="0" x2="0" y2="6" stroke="#555555" '
    'stroke-width="1.6"/></pattern><linearGradient id="ramp">'
    + "".join(f'<stop offset="{k / 10:.1f}" stop-color="{colour(k / 10)}"/>' for k in range(11))
    + "</linearGradient></defs>"
)
# The pick's row and column labels are drawn red and bold, so the pick is easy to find even
# when cells are narrow.
_HIGHLIGHT = f' fill="{PICK}" font-weight="bold"'


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
    finite = [v for row in values for v in row if is_finite(v)]
    low, high = (min(finite), max(finite)) if finite else (0.0, 0.0)
    span = high - low

    def shade(v: float) -> str:
        t = (v - low) / span if span > 0 else 0.5
        return colour(t if higher_is_better else 1 - t)

    cw = max(12.0, min(40.0, 560.0 / max(n_cols, 1)))  # cell width: fit ~560 px, stay legible
    left = 14 + 7.0 * max((len(label) for label in row_labels), default=0)
    grid = _Grid(x0=left + 6, top=54.0, cw=cw, ch=22.0)
    grid_w, grid_h = cw * n_cols, grid.ch * n_rows
    # Wide enough for the title (bold 14 px ≈ 8.2 px a character) and the legend keys.
    width = max(grid.x0 + grid_w + 16, 16 + 8.2 * len(title), grid.x0 + 340)
    height = grid.top + grid_h + 34 + 62
    pick_row, pick_col = pick if pick is not None else (-1, -1)
    out = [
        title_text(title, 18),
        f'<text x="{grid.x0 + grid_w / 2:.1f}" y="36" text-anchor="middle" fill="#444444">'
        "layer</text>",
        *_column_labels(grid, col_labels[:n_cols], pick_col),
        *_heatmap_rows(grid, values, row_labels, n_cols, pick_row, shade),
        *_heatmap_marks(grid, (n_rows, n_cols), filtered, pick),
        _heatmap_legend(grid, grid.top + grid_h + 14, finite, higher_is_better),
    ]
    return document(width, height, out, _HEATMAP_DEFS)


def _column_labels(grid: _Grid, labels: Sequence[str], pick_col: int) -> list[str]:
    """The layer labels, thinned out when cells get narrow; the pick's is always drawn."""
    label_every = max(1, math.ceil(22 / grid.cw))
    out = []
    for j, label in enumerate(labels):
        near_pick = j != pick_col and abs(j - pick_col) < label_every
        if (j % label_every == 0 and not near_pick) or j == pick_col:
            x = grid.x0 + (j + 0.5) * grid.cw
            out.append(
                f'<text x="{x:.1f}" y="{grid.top - 5:.1f}" text-anchor="middle" font-size="10"'
                f"{_HIGHLIGHT if j == pick_col else ''}>{escape_text(label)}</text>"
            )
    return out


def _heatmap_rows(
    grid: _Grid,
    values: Sequence[Sequence[float | None]],
    row_labels: Sequence[str],
    n_cols: int,
    pick_row: int,
    shade: Callable[[float], str],
) -> list[str]:
    """Each row's label, then its cells."""
    x0, cw, ch = grid.x0, grid.cw, grid.ch
    out = []
    for i, row in enumerate(values):
        y = grid.top + i * ch
        if i < len(row_labels):
            out.append(
                f'<text x="{x0 - 6:.1f}" y="{y + ch / 2 + 4:.1f}" text-anchor="end" '
                f'font-family="DejaVu Sans Mono,monospace"{_HIGHLIGHT if i == pick_row else ""}>'
                f"{escape_text(row_labels[i])}</text>"
            )
        for j in range(n_cols):
            v = row[j] if j < len(row) else None
            fill = shade(v) if is_finite(v) else NONE_FILL
            out.append(
                f'<rect class="cell" x="{x0 + j * cw:.1f}" y="{y:.1f}" width="{cw:.1f}" '
                f'height="{ch:.1f}" fill="{fill}" stroke="#ffffff" stroke-width="0.5"/>'
            )
    return out


def _heatmap_marks(
    grid: _Grid,
    shape: tuple[int, int],
    filtered: Collection[tuple[int, int]],
    pick: tuple[int, int] | None,
) -> list[str]:
    """Hatching over the filtered cells, then the pick's outline on top."""
    (n_rows, n_cols), x0, top, cw, ch = shape, grid.x0, grid.top, grid.cw, grid.ch
    out = [
        f'<rect class="filtered" x="{x0 + j * cw:.1f}" y="{top + i * ch:.1f}" '
        f'width="{cw:.1f}" height="{ch:.1f}" fill="url(#hatch)"/>'
        for i, j in filtered
        if 0 <= i < n_rows and 0 <= j < n_cols
    ]
    if pick is not None and 0 <= pick[0] < n_rows and 0 <= pick[1] < n_cols:
        i, j = pick
        out.append(
            f'<rect class="pick" x="{x0 + j * cw + 1.5:.1f}" y="{top + i * ch + 1.5:.1f}" '
            f'width="{cw - 3:.1f}" height="{ch - 3:.1f}" fill="none" stroke="{PICK}" '
            'stroke-width="3"/>'
        )
    return out


def _heatmap_legend(grid: _Grid, ly: float, finite: list[float], higher_is_better: bool) -> str:
    """Colour bar (light → dark = worse → better) labelled with the extreme values, then keys for
    pick, filtered and empty cells."""
    x0 = grid.x0
    low, high = (min(finite), max(finite)) if finite else (None, None)
    ends = [f"min {fmt(low)}", f"max {fmt(high)}"]
    if not higher_is_better:
        ends.reverse()
    out = [
        f'<rect x="{x0:.1f}" y="{ly:.1f}" width="160" height="12" fill="url(#ramp)" '
        'stroke="#888888" stroke-width="0.5"/>'
        f'<text x="{x0:.1f}" y="{ly + 26:.1f}" font-size="11">{ends[0]}</text>'
        f'<text x="{x0 + 160:.1f}" y="{ly + 26:.1f}" font-size="11" text-anchor="end">'
        f'{ends[1]}</text><text x="{x0 + 170:.1f}" y="{ly + 10:.1f}" font-size="11" '
        'fill="#555555">darker = better</text>'
    ]
    ky = ly + 40
    keys = [
        (f'fill="none" stroke="{PICK}" stroke-width="3"', "pick"),
        ('fill="url(#hatch)" stroke="#888888" stroke-width="0.5"', "filtered"),
        (f'fill="{NONE_FILL}"', "no value"),
    ]
    for k, (style, label) in enumerate(keys):
        kx = x0 + k * 110
        out.append(
            f'<rect x="{kx:.1f}" y="{ky:.1f}" width="16" height="12" {style}/>'
            f'<text x="{kx + 22:.1f}" y="{ky + 10:.1f}" font-size="11">{label}</text>'
        )
    return "".join(out)
