"""Generation, judges and metrics."""

from refusalkit.evaluation.generation import generate
from refusalkit.evaluation.judges import REFUSAL_PHRASES, SubstringJudge, is_degenerate
from refusalkit.evaluation.metrics import Rate, wilson_interval

__all__ = [
    "REFUSAL_PHRASES",
    "Rate",
    "SubstringJudge",
    "generate",
    "is_degenerate",
    "wilson_interval",
]
