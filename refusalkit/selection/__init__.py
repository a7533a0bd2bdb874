"""Direction selection: COSMIC (the default)."""

from refusalkit.selection.cosmic import (
    CandidateRecord,
    CosmicSettings,
    EvaluationLayers,
    SelectionOutcome,
    low_similarity_layers,
    select,
)
from refusalkit.selection.engine import CosmicEngine

__all__ = [
    "CandidateRecord",
    "CosmicEngine",
    "CosmicSettings",
    "EvaluationLayers",
    "SelectionOutcome",
    "low_similarity_layers",
    "select",
]
