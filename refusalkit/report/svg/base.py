"""What every chart shares: escaping, number labels, the colour ramp and series colours, the
SVG document, y-axis ticks, titles and axis labels."""

from __future__ import annotations

import base64
import math
import re
from collections.abc import Callable, Sequence
from html import escape
from typing import TypeGuard

# (value, interval low, interval high); None where unknown.
Interval = tuple[float | None, float | None, float | None]

# Sequential ramp (pale → dark blue) used for every heatmap: light = low, dark = high.
_RAMP = ((247, 252, 240), (168, 221, 181), (67, 162, 202), (8, 104, 172), (8, 29, 88))
NONE_FILL = "#c8c8c8"  # cell without a value (null / NaN)
PICK = "#e8112d"  # outline of the selected candidate; red stands out against the blue ramp
SERIES = ("#4c78a8", "#f58518", "#54a24b", "#b279a2", "#9d755d")
_FONT = "font-family:DejaVu Sans,Arial,Helvetica,sans-serif;font-size:12px"
# XML 1.0 forbids most control characters even when escaped; tokens can contain them.
_XML_INVALID = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


def escape_text(s: str) -> str:
    """Escape text for SVG or HTML: entities, and control characters (invalid in XML, invisible
    in HTML) shown as ``\\xNN`` so odd tokens stay visible instead of breaking the document."""
    return escape(_XML_INVALID.sub(lambda m: f"\\x{ord(m.group()):02x}", s))


def is_finite(x: float | None) -> TypeGuard[float]:
    return x is not None and math.isfinite(x)


def fmt(x: float | None, digits: int = 3) -> str:
    """Compact number for labels; '–' for a missing value."""
    return f"{x:.{digits}g}" if is_finite(x) else "–"


def colour(t: float) -> str:
    """Colour of the ramp at t ∈ [0, 1] (clamped), by linear interpolation between anchors."""
    t = min(1.0, max(0.0, t)) * (len(_RAMP) - 1)
    i = min(int(t), len(_RAMP) - 2)
    a, b, f = _RAMP[i], _RAMP[i + 1], t - i
    return "#" + "".join(f"{round(x + (y - x) * f):02x}" for x, y in zip(a, b, strict=True))


def document(width: float, height: float, body: list[str], defs: str = "") -> str:
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


def y_ticks(ticks: Sequence[float], left: float, pw: float, py: Callable[[float], float]) -> str:
    """Horizontal grid lines across the plot at ``ticks``, each labelled on the left."""
    return "".join(
        f'<line x1="{left}" x2="{left + pw}" y1="{py(t):.1f}" y2="{py(t):.1f}" '
        f'stroke="#e4e4e4"/><text x="{left - 6}" y="{py(t) + 4:.1f}" text-anchor="end" '
        f'font-size="11">{fmt(t)}</text>'
        for t in ticks
    )


def title_text(title: str, y: int) -> str:
    return f'<text x="8" y="{y}" font-size="14" font-weight="bold">{escape_text(title)}</text>'


def series_colour(s: int) -> str:
    return SERIES[s % len(SERIES)]


def axis_labels(x_mid: float, x_y: float, y_mid: float, x_label: str, y_label: str) -> str:
    """The x label centred under the plot, the y label rotated beside it."""
    return (
        f'<text x="{x_mid:.0f}" y="{x_y}" text-anchor="middle" '
        f'fill="#444444">{escape_text(x_label)}</text><text transform="translate(16 '
        f'{y_mid:.0f}) rotate(-90)" text-anchor="middle" fill="#444444">'
        f"{escape_text(y_label)}</text>"
    )
