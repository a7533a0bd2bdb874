"""The evaluation block: coherence, the judged test sets and ``summary.json``'s ``evaluation``."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from refusalkit.evaluation.metrics import Rate
from refusalkit.runs.records._json import Json, optional, put
from refusalkit.runs.records.rates import TEST_SETS, RateBlock, SetEvaluation, rate_fields


@dataclass(frozen=True)
class Coherence:
    """The cost of removal on harmless prompts. The measures every report shows are required;
    the others are kept where recorded."""

    n_tokens: int
    kl: float
    baseline_cross_entropy: float
    intervention_cross_entropy: float
    intervention: str | None
    n_prompts: int | None
    kl_max: float | None
    cross_entropy_increase: float | None

    def to_dict(self) -> Json:
        out: Json = {}
        put(out, "intervention", self.intervention)
        put(out, "n_prompts", self.n_prompts)
        out["n_tokens"] = self.n_tokens
        out["kl"] = self.kl
        put(out, "kl_max", self.kl_max)
        out["baseline_cross_entropy"] = self.baseline_cross_entropy
        out["intervention_cross_entropy"] = self.intervention_cross_entropy
        put(out, "cross_entropy_increase", self.cross_entropy_increase)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Coherence:
        return cls(
            int(data["n_tokens"]),
            float(data["kl"]),
            float(data["baseline_cross_entropy"]),
            float(data["intervention_cross_entropy"]),
            optional(data, "intervention"),
            optional(data, "n_prompts"),
            optional(data, "kl_max"),
            optional(data, "cross_entropy_increase"),
        )


@dataclass(frozen=True)
class JudgedEvaluation:
    """What the judged completions of a run give (``suite.judged_evaluation``): per test set,
    per judge, and the degenerate outputs over every intervention completion."""

    sets: dict[str, SetEvaluation]  # in TEST_SETS order, the sets that were evaluated
    judge: str  # the headline judge
    judges: dict[str, dict[str, RateBlock]]  # judge -> test set -> rates
    judge_settings: dict[str, Any]  # the judge panel's settings, echoed as written
    degenerate: Rate | None  # None: not recorded (the report counts it from the completions)

    def _judged_dict(self) -> Json:
        out: Json = {label: block.to_dict() for label, block in self.sets.items()}
        out["judge"] = self.judge
        out["judges"] = {
            name: {label: block.to_dict() for label, block in blocks.items()}
            for name, blocks in self.judges.items()
        }
        out["judge_settings"] = self.judge_settings
        if self.degenerate is not None:
            out |= rate_fields("degenerate", self.degenerate, "degenerate_n")
        return out

    def to_dict(self) -> Json:
        return self._judged_dict()

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> JudgedEvaluation:
        degenerate = (
            Rate(int(data["degenerate_count"]), int(data["degenerate_n"]))
            if "degenerate_count" in data and "degenerate_n" in data
            else None
        )
        return JudgedEvaluation(
            {label: SetEvaluation.from_dict(data[label]) for label in TEST_SETS if label in data},
            str(data["judge"]),
            {
                str(name): {str(label): RateBlock.from_dict(b) for label, b in blocks.items()}
                for name, blocks in data["judges"].items()
            },
            dict(data["judge_settings"]),
            degenerate,
        )


@dataclass(frozen=True)
class Evaluation(JudgedEvaluation):
    """``summary.json``'s ``evaluation`` (and ``evaluation.json``): the judged sets plus the
    intervention each set ran under and the coherence cost."""

    interventions: dict[str, str]  # test set -> the intervention, in words
    coherence: Coherence

    def to_dict(self) -> Json:
        return {
            **self._judged_dict(),
            "interventions": dict(self.interventions),
            "coherence": self.coherence.to_dict(),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Evaluation:
        judged = JudgedEvaluation.from_dict(data)
        return cls(
            judged.sets,
            judged.judge,
            judged.judges,
            judged.judge_settings,
            judged.degenerate,
            {str(k): str(v) for k, v in data["interventions"].items()},
            Coherence.from_dict(data["coherence"]),
        )
