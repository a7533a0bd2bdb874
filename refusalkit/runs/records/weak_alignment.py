"""Weakly aligned models: the α sweep, its verdict and stage 1 of a two-stage run."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from refusalkit.evaluation.metrics import Rate
from refusalkit.runs.records._json import Json, optional, put
from refusalkit.runs.records.rates import (
    TEST_SETS,
    SetEvaluation,
    rate_fields,
    rate_from_dict,
    rate_from_fields,
    rate_to_dict,
)
from refusalkit.runs.records.selection import SelectionSummary


@dataclass(frozen=True)
class SweepPoint:
    """One α of the sweep: harmful refusal (what steering is for), harmless refusal (its cost)
    and degenerate outputs over both sets."""

    alpha: float
    harmful: Rate
    harmless: Rate
    degenerate: Rate

    def to_dict(self) -> Json:
        return {
            "alpha": self.alpha,
            **rate_fields("harmful_refusal", self.harmful, "harmful_n"),
            **rate_fields("harmless_refusal", self.harmless, "harmless_n"),
            **rate_fields("degenerate", self.degenerate, "degenerate_n"),
        }

    def as_dict(self) -> Json:
        """:meth:`to_dict` under the name the pipeline calls."""
        return self.to_dict()

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SweepPoint:
        return cls(
            data["alpha"],
            rate_from_fields(data, "harmful_refusal", int(data["harmful_n"])),
            rate_from_fields(data, "harmless_refusal", int(data["harmless_n"])),
            rate_from_fields(data, "degenerate", int(data["degenerate_n"])),
        )


@dataclass(frozen=True)
class StageContrast:
    """How much of the original harmful−harmless difference stage 1 left at the stage-2 pick."""

    position: int
    layer: int
    norm_ratio: float | None  # None: the original model had no difference there
    cosine: float | None  # None: the angle is undefined (one of the differences is zero)

    def to_dict(self) -> Json:
        return {
            "position": self.position,
            "layer": self.layer,
            "norm_ratio": self.norm_ratio,
            "cosine": self.cosine,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> StageContrast:
        return cls(int(data["position"]), int(data["layer"]), data["norm_ratio"], data["cosine"])


@dataclass(frozen=True)
class WeakAlignment:
    """``summary.json``'s ``weak_alignment``: the setting and the sweep's verdict."""

    mode: str
    steering: str
    l_low: list[int]
    l_low_note: str
    unsteered: dict[str, Rate]  # harmful, harmless: the model being steered, without steering
    steerable: bool
    best_alpha: float | None  # None where nothing was steered
    harmful_monotonic: bool
    min_rise: float
    statement: str
    stage2_contrast: StageContrast | None  # two-stage runs only

    def to_dict(self) -> Json:
        out: Json = {
            "mode": self.mode,
            "steering": self.steering,
            "l_low": list(self.l_low),
            "l_low_note": self.l_low_note,
            "unsteered": {label: rate_to_dict(rate) for label, rate in self.unsteered.items()},
            "steerable": self.steerable,
            "best_alpha": self.best_alpha,
            "harmful_monotonic": self.harmful_monotonic,
            "min_rise": self.min_rise,
            "statement": self.statement,
        }
        put(
            out, "stage2_contrast", self.stage2_contrast.to_dict() if self.stage2_contrast else None
        )
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> WeakAlignment:
        contrast = optional(data, "stage2_contrast")
        return cls(
            str(data["mode"]),
            str(data["steering"]),
            [int(layer) for layer in data["l_low"]],
            str(data["l_low_note"]),
            {str(label): rate_from_dict(r) for label, r in data["unsteered"].items()},
            bool(data["steerable"]),
            data["best_alpha"],
            bool(data["harmful_monotonic"]),
            data["min_rise"],
            str(data["statement"]),
            StageContrast.from_dict(contrast) if contrast is not None else None,
        )


@dataclass(frozen=True)
class Stage1:
    """Stage 1 of a two-stage run: the removal that made a weakly aligned model, and its effect
    (baseline: the original model; intervention: after stage 1)."""

    selection: SelectionSummary
    intervention: str
    sets: dict[str, SetEvaluation]  # harmful, harmless
    judge: str

    def to_dict(self) -> Json:
        return {
            "selection": self.selection.to_dict(),
            "intervention": self.intervention,
            **{label: block.to_dict() for label, block in self.sets.items()},
            "judge": self.judge,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Stage1:
        return cls(
            SelectionSummary.from_dict(data["selection"]),
            str(data["intervention"]),
            {label: SetEvaluation.from_dict(data[label]) for label in TEST_SETS if label in data},
            str(data["judge"]),
        )


@dataclass(frozen=True)
class WeakAlignmentRun:
    """What a ``--weak-alignment`` run adds to the summary."""

    alpha_sweep: tuple[SweepPoint, ...]
    weak_alignment: WeakAlignment
    stage1: Stage1 | None  # two-stage runs only
