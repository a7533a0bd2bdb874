"""One self-contained HTML page for a ``refusalkit run`` or ``refusalkit compare`` directory.

The page must open offline and be safe to mail around: CSS inline, every plot an SVG data URI,
no external URL, every piece of prompt/completion text escaped, and a Content-Security-Policy that
forbids loading anything but data: images, so a stray URL could not be fetched even if one slipped
in. ``summary.json`` and ``comparison.json`` are read once into their records
(:mod:`refusalkit.runs.records`) and rendered from typed fields; the other run files (selection
scores, provenance, configuration, completions) are shown as far as they are present.

The two pages are :mod:`.run_page` and :mod:`.compare_page`; their sections are :mod:`.evaluation`
(rates, judges, side effects), :mod:`.selection` (plots of every candidate, the pick),
:mod:`.samples`, :mod:`.sweep` (weakly aligned models) and :mod:`.provenance`, built from
:mod:`.elements` inside the shell of :mod:`.page` (script, CSP, stylesheet).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from refusalkit.errors import RefusalkitError
from refusalkit.io import write_text
from refusalkit.report.html.compare_page import compare_page
from refusalkit.report.html.elements import pending_or_file
from refusalkit.report.html.run_page import run_page

__all__ = ["render_html", "write_html_report"]


def render_html(run_dir: Path, pending: Mapping[str, Any] | None = None) -> str:
    """The report page for a run directory (summary.json/selection.json) or a compare directory
    (comparison.json), as one self-contained HTML string. ``pending`` maps file names to the
    content they are about to be written with: a workflow renders its report before it writes
    its result file (see refusalkit.runs.directory), as the finished directory will read."""
    run_dir = Path(run_dir)
    pending = pending or {}
    present = {name for name in pending} | {p.name for p in run_dir.glob("*.json")}
    if "comparison.json" in present:
        return compare_page(run_dir, pending)
    if "geometry.json" in present:
        from refusalkit.report.geometry import render_geometry_html

        return render_geometry_html(pending_or_file(run_dir, "geometry.json", pending))
    if "harmfulness.json" in present:
        from refusalkit.report.harmfulness import render_harmfulness_html

        return render_harmfulness_html(pending_or_file(run_dir, "harmfulness.json", pending))
    if "summary.json" in present or "selection.json" in present:
        return run_page(run_dir, pending)
    raise RefusalkitError(
        f"{run_dir} has no summary.json, selection.json or comparison.json: "
        "give the directory of a `refusalkit run`, `compare` or `harmfulness`"
    )


def write_html_report(run_dir: Path, pending: Mapping[str, Any] | None = None) -> Path:
    """Render the report and write it atomically to ``run_dir / "report.html"``."""
    path = Path(run_dir) / "report.html"
    write_text(path, render_html(Path(run_dir), pending))
    return path
