"""Human-readable reports of run directories: one self-contained HTML page (``report.html``)
with inline SVG plots, readable offline."""

from refusalkit.report.html import render_html, write_html_report

__all__ = ["render_html", "write_html_report"]
