"""The two result files: ``summary.json`` (a run) and ``comparison.json`` (a compare)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from refusalkit.evaluation.metrics import Rate
from refusalkit.runs.records._json import SCHEMA_VERSION, Json, check_version, optional
from refusalkit.runs.records.evaluation import Evaluation
from refusalkit.runs.records.rates import TEST_SETS, RateBlock, rate_fields, rate_from_fields
from refusalkit.runs.records.selection import SelectionSummary
from refusalkit.runs.records.verdict import RunVerdict
from refusalkit.runs.records.weak_alignment import (
    Stage1,
    SweepPoint,
    WeakAlignment,
    WeakAlignmentRun,
)


@dataclass(frozen=True)
class Adversarial:
    """SPEC §5's adversarial system prompt, where the run used one."""

    condition: str  # "A" (val) or "B" (train and val)
    applied_to: list[str]
    text: str
    test_prompts: str

    def to_dict(self) -> Json:
        return {
            "condition": self.condition,
            "applied_to": list(self.applied_to),
            "text": self.text,
            "test_prompts": self.test_prompts,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Adversarial:
        return cls(
            str(data["condition"]),
            [str(s) for s in data["applied_to"]],
            str(data["text"]),
            str(data["test_prompts"]),
        )


def _adversarial(data: Mapping[str, Any]) -> Adversarial | None:
    record = data["adversarial"]
    return Adversarial.from_dict(record) if record is not None else None


@dataclass(frozen=True)
class RunSummary:
    """``summary.json``: the verdict first, then the pick and the evaluation."""

    model: str
    verdict: RunVerdict
    selection: SelectionSummary
    evaluation: Evaluation
    weak: WeakAlignmentRun | None
    adversarial: Adversarial | None
    config_sha256: str
    seconds: float

    def to_dict(self) -> Json:
        # The verdict is said first (issue 12's contract: model, then verdict); the schema
        # version closes the file.
        out: Json = {"model": self.model, "verdict": self.verdict.to_dict()}
        if self.weak is not None and self.weak.stage1 is not None:
            out["stage1"] = self.weak.stage1.to_dict()  # the pipeline writes it ahead
        out["selection"] = self.selection.to_dict()
        out["evaluation"] = self.evaluation.to_dict()
        if self.weak is not None:
            out["alpha_sweep"] = [point.to_dict() for point in self.weak.alpha_sweep]
            out["weak_alignment"] = self.weak.weak_alignment.to_dict()
        out["adversarial"] = self.adversarial.to_dict() if self.adversarial else None
        out["config_sha256"] = self.config_sha256
        out["seconds"] = self.seconds
        out["schema_version"] = SCHEMA_VERSION
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RunSummary:
        check_version(data, "summary.json")
        weak = None
        if "weak_alignment" in data:
            stage1 = optional(data, "stage1")
            weak = WeakAlignmentRun(
                tuple(SweepPoint.from_dict(p) for p in data["alpha_sweep"]),
                WeakAlignment.from_dict(data["weak_alignment"]),
                Stage1.from_dict(stage1) if stage1 is not None else None,
            )
        return cls(
            str(data["model"]),
            RunVerdict.from_dict(data["verdict"]),
            SelectionSummary.from_dict(data["selection"]),
            Evaluation.from_dict(data["evaluation"]),
            weak,
            _adversarial(data),
            str(data["config_sha256"]),
            data["seconds"],
        )


@dataclass(frozen=True)
class FailedMethod:
    """A ``compare`` method that found no candidate: recorded, and the comparison goes on."""

    selector: str
    steering: str
    error: str

    @property
    def name(self) -> str:
        return f"{self.selector}-{self.steering}"

    def to_dict(self) -> Json:
        return {"selector": self.selector, "steering": self.steering, "error": self.error}


@dataclass(frozen=True)
class ComparisonRow:
    """One method's line of ``comparison.json``: its pick, every rate with count and interval,
    selection KL (validation) and the coherence numbers (test). Each set's rates are over that
    set's n prompts, which is what the row records."""

    selector: str
    steering: str
    position: int
    layer: int
    score: float
    kl: float
    sets: dict[str, RateBlock]  # harmful, harmless, over_refusal where evaluated
    compliance: Rate  # attack success on harmful prompts
    test_kl: float
    cross_entropy_increase: float
    baseline_cross_entropy: float
    intervention_cross_entropy: float
    degenerate: Rate
    selection_seconds: float
    verdict: RunVerdict

    @property
    def name(self) -> str:
        return f"{self.selector}-{self.steering}"

    def to_dict(self) -> Json:
        out: Json = {
            "selector": self.selector,
            "steering": self.steering,
            "position": self.position,
            "layer": self.layer,
            "score": self.score,
            "kl": self.kl,
            "n": self.sets["harmful"].n,
        }
        for label, block in self.sets.items():
            out |= rate_fields(f"{label}_baseline_refusal", block.baseline)
            out |= rate_fields(f"{label}_intervention_refusal", block.intervention)
            out[f"{label}_n"] = block.n
        out |= rate_fields("harmful_intervention_compliance", self.compliance)
        out |= {
            "test_kl": self.test_kl,
            "cross_entropy_increase": self.cross_entropy_increase,
            "baseline_cross_entropy": self.baseline_cross_entropy,
            "intervention_cross_entropy": self.intervention_cross_entropy,
            **rate_fields("degenerate", self.degenerate, "degenerate_n"),
            "selection_seconds": self.selection_seconds,
            "verdict": self.verdict.to_dict(),
        }
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ComparisonRow:
        sets = {}
        for label in TEST_SETS:
            if f"{label}_n" in data:
                n = int(data[f"{label}_n"])
                sets[label] = RateBlock(
                    n,
                    rate_from_fields(data, f"{label}_baseline_refusal", n),
                    rate_from_fields(data, f"{label}_intervention_refusal", n),
                )
        return cls(
            str(data["selector"]),
            str(data["steering"]),
            int(data["position"]),
            int(data["layer"]),
            data["score"],
            data["kl"],
            sets,
            rate_from_fields(data, "harmful_intervention_compliance", sets["harmful"].n),
            data["test_kl"],
            data["cross_entropy_increase"],
            data["baseline_cross_entropy"],
            data["intervention_cross_entropy"],
            Rate(int(data["degenerate_count"]), int(data["degenerate_n"])),
            data["selection_seconds"],
            RunVerdict.from_dict(data["verdict"]),
        )


def comparison_row_from_dict(data: Mapping[str, Any]) -> ComparisonRow | FailedMethod:
    if "error" in data:
        return FailedMethod(str(data["selector"]), str(data["steering"]), str(data["error"]))
    return ComparisonRow.from_dict(data)


@dataclass(frozen=True)
class Comparison:
    """``comparison.json``: one row per method, and which methods found a working direction."""

    model: str
    working_methods: list[str]
    rows: list[ComparisonRow | FailedMethod]
    adversarial: Adversarial | None
    judge: str
    seconds: float

    @property
    def selected(self) -> list[ComparisonRow]:
        return [row for row in self.rows if isinstance(row, ComparisonRow)]

    def to_dict(self) -> Json:
        return {
            "model": self.model,
            "working_methods": list(self.working_methods),
            "rows": [row.to_dict() for row in self.rows],
            "adversarial": self.adversarial.to_dict() if self.adversarial else None,
            "judge": self.judge,
            "seconds": self.seconds,
            "schema_version": SCHEMA_VERSION,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Comparison:
        check_version(data, "comparison.json")
        return cls(
            str(data["model"]),
            [str(m) for m in data["working_methods"]],
            [comparison_row_from_dict(row) for row in data["rows"]],
            _adversarial(data),
            str(data["judge"]),
            data["seconds"],
        )
