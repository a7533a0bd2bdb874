"""Run directories: the marker, the lock, resume by content identity, status records."""

from refusalkit.runs.directory import RunDirectory, check_output_path
from refusalkit.runs.identity import model_fingerprint

__all__ = ["RunDirectory", "check_output_path", "model_fingerprint"]
