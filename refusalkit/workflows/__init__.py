"""Workflows: each is a module built on the run directory (``refusalkit.runs``), the library
(``refusalkit.api`` and the modules it uses) and the reports (``refusalkit.report``)."""

from refusalkit.workflows.compare import compare
from refusalkit.workflows.harmfulness import run_harmfulness as harmfulness
from refusalkit.workflows.standard import run

__all__ = ["compare", "harmfulness", "run"]
