"""Rates as the files hold them: the three layouts of one rate, the baseline/intervention block
of a test set, and the degenerate outputs."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from refusalkit.evaluation.metrics import Rate
from refusalkit.runs.records._json import Json, optional, put

TEST_SETS = ("harmful", "harmless", "over_refusal")
CONDITIONS = ("baseline", "intervention")


def rate_to_dict(rate: Rate) -> Json:
    """``{"rate", "count", "n", "ci95"}``: a rate standing alone."""
    return {"rate": rate.value, "count": rate.count, "n": rate.n, "ci95": list(rate.ci95)}


def rate_from_dict(data: Mapping[str, Any]) -> Rate:
    return Rate(int(data["count"]), int(data["n"]))


def rate_fields(prefix: str, rate: Rate, n_key: str | None = None) -> Json:
    """``<prefix>_rate``, ``<prefix>_count``, [``n_key``,] ``<prefix>_rate_ci95``: a rate inside
    a block whose n is written once for several rates (or, with ``n_key``, beside it)."""
    out: Json = {f"{prefix}_rate": rate.value, f"{prefix}_count": rate.count}
    if n_key is not None:
        out[n_key] = rate.n
    out[f"{prefix}_rate_ci95"] = list(rate.ci95)
    return out


def rate_from_fields(data: Mapping[str, Any], prefix: str, n: int) -> Rate:
    return Rate(int(data[f"{prefix}_count"]), n)


@dataclass(frozen=True)
class RateBlock:
    """Baseline and intervention refusal of one test set (or one category, or one judge's view):
    ``n`` prompts, each rate over the completions its judge judged (a judge may abstain)."""

    n: int
    baseline: Rate
    intervention: Rate

    def to_dict(self) -> Json:
        out: Json = {"n": self.n}
        for condition, rate in zip(CONDITIONS, (self.baseline, self.intervention), strict=True):
            out |= rate_fields(f"{condition}_refusal", rate)
            out[f"{condition}_judged"] = rate.n
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RateBlock:
        n = int(data["n"])
        # Without a judged count every prompt was judged (blocks written by hand leave it out).
        baseline, intervention = (
            rate_from_fields(data, f"{c}_refusal", int(data.get(f"{c}_judged", n)))
            for c in CONDITIONS
        )
        return cls(n, baseline, intervention)


@dataclass(frozen=True)
class DegenerateRate:
    """Degenerate outputs under one condition, with how many of each kind."""

    rate: Rate
    reasons: dict[str, int]

    def to_dict(self) -> Json:
        return {**rate_to_dict(self.rate), "reasons": dict(self.reasons)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DegenerateRate:
        return cls(rate_from_dict(data), {str(k): int(v) for k, v in data["reasons"].items()})


@dataclass(frozen=True)
class DegenerateRates:
    baseline: DegenerateRate
    intervention: DegenerateRate

    def to_dict(self) -> Json:
        return {"baseline": self.baseline.to_dict(), "intervention": self.intervention.to_dict()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DegenerateRates:
        return cls(
            DegenerateRate.from_dict(data["baseline"]),
            DegenerateRate.from_dict(data["intervention"]),
        )


@dataclass(frozen=True)
class SetEvaluation(RateBlock):
    """One test set of the evaluation: refusal rates, and (harmful only) attack success, the
    degenerate outputs and the per-category rates."""

    compliance: Rate | None  # harmful prompts: neither refused nor degenerate
    degenerate: DegenerateRates | None
    per_category: dict[str, RateBlock] | None

    def to_dict(self) -> Json:
        out = super().to_dict()
        if self.compliance is not None:
            out |= rate_fields("intervention_compliance", self.compliance)
        put(out, "degenerate", self.degenerate.to_dict() if self.degenerate else None)
        if self.per_category is not None:
            out["per_category"] = {c: b.to_dict() for c, b in self.per_category.items()}
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SetEvaluation:
        block = RateBlock.from_dict(data)
        compliance = (
            rate_from_fields(data, "intervention_compliance", block.n)
            if "intervention_compliance_count" in data
            else None
        )
        degenerate = optional(data, "degenerate")
        categories = optional(data, "per_category")
        return cls(
            block.n,
            block.baseline,
            block.intervention,
            compliance,
            DegenerateRates.from_dict(degenerate) if degenerate is not None else None,
            (
                {str(c): RateBlock.from_dict(b) for c, b in categories.items()}
                if categories is not None
                else None
            ),
        )
