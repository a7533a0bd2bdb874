"""The stage machinery every workflow shares: status while a stage runs, one failure path, and
the ordered finish that keeps "finished" honest."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from refusalkit.io import write_json
from refusalkit.report.html import write_html_report
from refusalkit.runs.directory import RunDirectory


class Stages:
    """Which stage a workflow is in; ``status.json`` says it while it runs."""

    def __init__(self, run_dir: RunDirectory) -> None:
        self.run_dir = run_dir
        self.current = "load"

    def enter(self, name: str) -> None:
        self.current = name
        self.run_dir.status(name, "running")


@contextmanager
def tracked(run_dir: RunDirectory) -> Iterator[Stages]:
    """Hold the run directory (its lock) for the block; any failure — an error, Ctrl-C, SIGTERM
    — is recorded as the current stage's in ``status.json`` and raised again."""
    stages = Stages(run_dir)
    with run_dir:
        try:
            stages.enter("load")
            yield stages
        except BaseException as error:
            run_dir.status(stages.current, "failed", f"{type(error).__name__}: {error}")
            raise


def finish(run_dir: RunDirectory, result_file: str, result: dict[str, Any]) -> None:
    """The last steps of every workflow, in the order that keeps "finished" honest: the HTML report
    (rendered as the finished run will read), then the result file, then the complete status. A
    failure in any of them leaves no result file, so the same command resumes."""
    complete = run_dir.status_record("done", "complete")
    write_html_report(run_dir.path, pending={result_file: result, "status.json": complete})
    write_json(run_dir.file(result_file), result)
    write_json(run_dir.file("status.json"), complete)
