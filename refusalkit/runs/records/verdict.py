"""The verdict: did the direction remove or induce refusal (``summary.json``'s ``verdict``)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, cast

from refusalkit.runs.records._json import Json

Effect = Literal["works", "no effect", "backfires"]
Kind = Literal["removal", "addition"]
KINDS: tuple[Kind, ...] = ("removal", "addition")


@dataclass(frozen=True)
class PairedShift:
    """Mean of per-prompt differences (after − before) with a 95% bootstrap interval."""

    mean: float
    low: float
    high: float
    n: int

    @property
    def sign(self) -> int:
        """+1 / −1 where the interval excludes 0 above / below, else 0."""
        return 1 if self.low > 0 else -1 if self.high < 0 else 0

    def describe(self, digits: int = 2) -> str:
        return f"{self.mean:+.{digits}f} (95% CI {self.low:+.{digits}f} to {self.high:+.{digits}f})"

    def to_dict(self) -> Json:
        return {"mean": self.mean, "ci95": [self.low, self.high], "n": self.n}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PairedShift:
        low, high = data["ci95"]
        return cls(float(data["mean"]), float(low), float(high), int(data["n"]))


@dataclass(frozen=True)
class EffectVerdict:
    """The verdict on one intervention over its test set (``verdict.details.<kind>``)."""

    kind: Kind
    effect: Effect
    reason: str
    before: int  # judged refusals without the intervention
    after: int  # with it
    n: int
    judged: PairedShift
    log_odds: PairedShift

    def to_dict(self) -> Json:
        return {
            "effect": self.effect,
            "reason": self.reason,
            "baseline_refusal_count": self.before,
            "intervention_refusal_count": self.after,
            "n": self.n,
            "refusal_rate_shift": self.judged.to_dict(),
            "log_odds_shift": self.log_odds.to_dict(),
        }

    @classmethod
    def from_dict(cls, kind: Kind, data: Mapping[str, Any]) -> EffectVerdict:
        return cls(
            kind,
            cast(Effect, data["effect"]),
            str(data["reason"]),
            int(data["baseline_refusal_count"]),
            int(data["intervention_refusal_count"]),
            int(data["n"]),
            PairedShift.from_dict(data["refusal_rate_shift"]),
            PairedShift.from_dict(data["log_odds_shift"]),
        )


@dataclass(frozen=True)
class RunVerdict:
    """Did the direction do what it is for: removal and addition, each where its test set had
    paired completions."""

    details: dict[Kind, EffectVerdict]  # removal first
    reason: str

    @property
    def works(self) -> bool:
        return any(v.effect == "works" for v in self.details.values())

    def effects(self) -> list[tuple[Kind, Effect]]:
        """(kind, effect), removal first: what every renderer shows."""
        return [(kind, self.details[kind].effect) for kind in KINDS if kind in self.details]

    def to_dict(self) -> Json:
        return {
            **dict(self.effects()),
            "reason": self.reason,
            "works": self.works,
            "details": {kind: v.to_dict() for kind, v in self.details.items()},
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RunVerdict:
        details = data["details"]
        return cls(
            {k: EffectVerdict.from_dict(k, details[k]) for k in KINDS if k in details},
            str(data["reason"]),
        )
