"""Small SVG charts as pure functions (data in, SVG string out): heatmap, line chart, bar chart,
lines with intervals over numeric x.

Hand-written instead of matplotlib so the report needs no plotting dependency and every chart is a
few kilobytes of text that can be inlined as a data URI. Every chart has explicit width/height so an
``<img>`` gets a non-zero natural size, and uses only generic fonts so it renders offline.
"""

from __future__ import annotations

from refusalkit.report.svg.bars import bar_chart
from refusalkit.report.svg.base import Interval, colour, data_uri, escape_text, fmt, nice_ticks
from refusalkit.report.svg.heatmap import heatmap
from refusalkit.report.svg.lines import Reference, interval_line_chart, line_chart
from refusalkit.report.svg.scatter import scatter_chart

__all__ = [
    "Interval",
    "Reference",
    "bar_chart",
    "colour",
    "data_uri",
    "escape_text",
    "fmt",
    "heatmap",
    "interval_line_chart",
    "line_chart",
    "nice_ticks",
    "scatter_chart",
]
