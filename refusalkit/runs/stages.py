"""The stage machinery every workflow shares: status while a stage runs, one failure path, and
the ordered finish that keeps "finished" honest."""

from __future__ import annotations

from typing import Any

from refusalkit.io import write_json
from refusalkit.report.html import write_html_report
from refusalkit.runs.directory import RunDirectory


def finish(run_dir: RunDirectory, result_file: str, result: dict[str, Any]) -> None:
    """The last steps of every workflow, in the order that keeps "finished" honest: the HTML report
    (rendered as the finished run will read), then the result file, then the complete status. A
    failure in any of them leaves no result file, so the same command resumes."""
    complete = run_dir.status_record("done", "complete")
    write_html_report(run_dir.path, pending={result_file: result, "status.json": complete})
    write_json(run_dir.file(result_file), result)
    write_json(run_dir.file("status.json"), complete)
