"""The pick as ``summary.json`` keeps it, with why it is the pick (diagnostics) and how often
it wins on resampled prompts (stability)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from refusalkit.runs.records._json import Json, optional, put


@dataclass(frozen=True)
class RemovedCandidate:
    """A candidate that scored better than the pick but was removed by a filter."""

    position: int
    layer: int
    score: float
    kl: float | None  # None: the filter removed it before its KL was computed

    def to_dict(self) -> Json:
        return {"position": self.position, "layer": self.layer, "score": self.score, "kl": self.kl}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RemovedCandidate:
        return cls(int(data["position"]), int(data["layer"]), data["score"], data["kl"])


@dataclass(frozen=True)
class FilterRemoval:
    """What one filter removed from above the pick: how many, the best few and, for the KL
    filter, their KL range against the threshold."""

    filter: str
    count: int
    best: tuple[RemovedCandidate, ...]
    kl_range: tuple[float, float] | None
    kl_threshold: float | None

    def to_dict(self) -> Json:
        out: Json = {
            "filter": self.filter,
            "count": self.count,
            "best": [c.to_dict() for c in self.best],
        }
        put(out, "kl_range", list(self.kl_range) if self.kl_range else None)
        put(out, "kl_threshold", self.kl_threshold)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FilterRemoval:
        kl_range = optional(data, "kl_range")
        return cls(
            str(data["filter"]),
            int(data["count"]),
            tuple(RemovedCandidate.from_dict(c) for c in data["best"]),
            (float(kl_range[0]), float(kl_range[1])) if kl_range is not None else None,
            optional(data, "kl_threshold"),
        )


@dataclass(frozen=True)
class Diagnostics:
    """Why the pick is the pick (``selection.diagnostics``)."""

    rank: int
    n_scored: int
    best_score: float | None
    removed_above_pick: dict[str, FilterRemoval]  # filter status -> what it removed
    warning: str | None

    def to_dict(self) -> Json:
        return {
            "rank": self.rank,
            "n_scored": self.n_scored,
            "best_score": self.best_score,
            "removed_above_pick": {k: v.to_dict() for k, v in self.removed_above_pick.items()},
            "warning": self.warning,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Diagnostics:
        return cls(
            int(data["rank"]),
            int(data["n_scored"]),
            data["best_score"],
            {str(k): FilterRemoval.from_dict(v) for k, v in data["removed_above_pick"].items()},
            data["warning"],
        )


@dataclass(frozen=True)
class StabilityWin:
    position: int
    layer: int
    count: int
    share: float

    def to_dict(self) -> Json:
        return {
            "position": self.position,
            "layer": self.layer,
            "count": self.count,
            "share": self.share,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> StabilityWin:
        return cls(int(data["position"]), int(data["layer"]), int(data["count"]), data["share"])


@dataclass(frozen=True)
class Stability:
    """``--stability N``: how often the pick won on bootstrap resamples; the top wins."""

    resamples: int
    seed: int
    pick: tuple[int, int]  # (position, layer)
    pick_share: float
    wins: tuple[StabilityWin, ...]
    nothing_selected: int

    def to_dict(self) -> Json:
        return {
            "resamples": self.resamples,
            "seed": self.seed,
            "pick": {"position": self.pick[0], "layer": self.pick[1]},
            "pick_share": self.pick_share,
            "wins": [w.to_dict() for w in self.wins],
            "nothing_selected": self.nothing_selected,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Stability:
        pick = data["pick"]
        return cls(
            int(data["resamples"]),
            int(data["seed"]),
            (int(pick["position"]), int(pick["layer"])),
            data["pick_share"],
            tuple(StabilityWin.from_dict(w) for w in data["wins"]),
            int(data["nothing_selected"]),
        )


# The scores a selection method records: COSMIC's s_comply/s_refuse, the output-based methods'
# bypass/induce; a record has only its method's.
_METHOD_SCORES = ("s_comply", "s_refuse", "bypass", "induce")


@dataclass(frozen=True)
class SelectionSummary:
    """The pick as ``summary.json`` keeps it (a subset of ``selection.json``; reads either)."""

    method: str
    steering: str
    position: int
    layer: int
    kl: float
    score: float | None
    n_candidates: int | None
    n_kept: int | None
    n_kl_evaluated: int | None
    scores: dict[str, float]  # the method's own scores: s_comply/s_refuse or bypass/induce
    diagnostics: Diagnostics | None
    stability: Stability | None

    def to_dict(self) -> Json:
        out: Json = {
            "method": self.method,
            "steering": self.steering,
            "position": self.position,
            "layer": self.layer,
        }
        put(out, "score", self.score)
        out["kl"] = self.kl
        put(out, "n_candidates", self.n_candidates)
        put(out, "n_kept", self.n_kept)
        put(out, "n_kl_evaluated", self.n_kl_evaluated)
        out |= {key: self.scores[key] for key in _METHOD_SCORES if key in self.scores}
        put(out, "diagnostics", self.diagnostics.to_dict() if self.diagnostics else None)
        put(out, "stability", self.stability.to_dict() if self.stability else None)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SelectionSummary:
        diagnostics, stability = optional(data, "diagnostics"), optional(data, "stability")
        return cls(
            str(data["method"]),
            str(data["steering"]),
            int(data["position"]),
            int(data["layer"]),
            data["kl"],
            optional(data, "score"),
            optional(data, "n_candidates"),
            optional(data, "n_kept"),
            optional(data, "n_kl_evaluated"),
            {key: data[key] for key in _METHOD_SCORES if key in data},
            Diagnostics.from_dict(diagnostics) if diagnostics is not None else None,
            Stability.from_dict(stability) if stability is not None else None,
        )
