"""Run directories: the marker, the lock, resume by content identity, status records; and the
typed records of the result files (the only place their JSON is written and read)."""

from refusalkit.runs.directory import RunDirectory, check_output_path
from refusalkit.runs.identity import model_fingerprint
from refusalkit.runs.records import SCHEMA_VERSION, Comparison, Evaluation, RunSummary

__all__ = [
    "SCHEMA_VERSION",
    "Comparison",
    "Evaluation",
    "RunDirectory",
    "RunSummary",
    "check_output_path",
    "model_fingerprint",
]
