"""Typed records of what a run writes: ``summary.json``, ``comparison.json`` and their parts.

Stages build these dataclasses; JSON is written (``to_dict``) and read (``from_dict``) in this
package and nowhere else, so the key layout of the files is defined once. ``to_dict`` gives
exactly the keys, values and key order the files have always had (the contract in README.md); the
two result files add a top-level ``schema_version``.

A rate is always :class:`~refusalkit.evaluation.metrics.Rate` (a count over n judged
completions): its value and 95% Wilson interval are derived from the two, so reading a rate takes
the count and the n, and writing it recomputes value and interval exactly as they were computed.
A part that a file may lack (a run without over-refusal prompts, a plain run without a weak-
alignment sweep) is an Optional field that is ``None`` when absent and left out when written.

Modules: :mod:`.rates` (a rate's layouts, the rate blocks), :mod:`.evaluation`, :mod:`.verdict`,
:mod:`.selection` (the pick, diagnostics, stability), :mod:`.weak_alignment` (the α sweep, stage 1)
and :mod:`.results` (``summary.json``, ``comparison.json``); every name is importable from here.
"""

from refusalkit.runs.records._json import SCHEMA_VERSION, Json
from refusalkit.runs.records.evaluation import (
    Coherence,
    Evaluation,
    JudgedEvaluation,
)
from refusalkit.runs.records.rates import (
    CONDITIONS,
    TEST_SETS,
    DegenerateRate,
    DegenerateRates,
    RateBlock,
    SetEvaluation,
    rate_fields,
    rate_from_dict,
    rate_from_fields,
    rate_to_dict,
)
from refusalkit.runs.records.results import (
    Adversarial,
    Comparison,
    ComparisonRow,
    FailedMethod,
    RunSummary,
    comparison_row_from_dict,
)
from refusalkit.runs.records.selection import (
    Diagnostics,
    FilterRemoval,
    RemovedCandidate,
    SelectionSummary,
    Stability,
    StabilityWin,
)
from refusalkit.runs.records.verdict import (
    KINDS,
    Effect,
    EffectVerdict,
    Kind,
    PairedShift,
    RunVerdict,
)
from refusalkit.runs.records.weak_alignment import (
    Stage1,
    StageContrast,
    SweepPoint,
    WeakAlignment,
    WeakAlignmentRun,
)

__all__ = [
    "CONDITIONS",
    "KINDS",
    "SCHEMA_VERSION",
    "TEST_SETS",
    "Adversarial",
    "Coherence",
    "Comparison",
    "ComparisonRow",
    "DegenerateRate",
    "DegenerateRates",
    "Diagnostics",
    "Effect",
    "EffectVerdict",
    "Evaluation",
    "FailedMethod",
    "FilterRemoval",
    "Json",
    "JudgedEvaluation",
    "Kind",
    "PairedShift",
    "RateBlock",
    "RemovedCandidate",
    "RunSummary",
    "RunVerdict",
    "SelectionSummary",
    "SetEvaluation",
    "Stability",
    "StabilityWin",
    "Stage1",
    "StageContrast",
    "SweepPoint",
    "WeakAlignment",
    "WeakAlignmentRun",
    "comparison_row_from_dict",
    "rate_fields",
    "rate_from_dict",
    "rate_from_fields",
    "rate_to_dict",
]
