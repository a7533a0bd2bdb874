"""Generation, judges, teacher-forced scoring and the evaluation suite."""

from refusalkit.evaluation.generation import Completion, generate
from refusalkit.evaluation.judges import (
    REFUSAL_PHRASES,
    FirstTokenJudge,
    Judge,
    ModelJudge,
    SubstringJudge,
    degenerate_reason,
    is_degenerate,
    load_model_judge,
)
from refusalkit.evaluation.metrics import Rate, wilson_interval
from refusalkit.evaluation.scoring import ResponseScores, teacher_forced

__all__ = [
    "REFUSAL_PHRASES",
    "Completion",
    "FirstTokenJudge",
    "Judge",
    "ModelJudge",
    "Rate",
    "ResponseScores",
    "SubstringJudge",
    "degenerate_reason",
    "generate",
    "is_degenerate",
    "load_model_judge",
    "teacher_forced",
    "wilson_interval",
]
