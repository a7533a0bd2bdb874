"""Typed records of what a run writes: ``summary.json``, ``comparison.json`` and their parts.

Stages build these dataclasses; JSON is written (``to_dict``) and read (``from_dict``) here and
nowhere else, so the key layout of the files is defined once. ``to_dict`` gives exactly the keys,
values and key order the files have always had (the contract in README.md); the two result files
add a top-level ``schema_version``.

A rate is always :class:`~refusalkit.evaluation.metrics.Rate` (a count over n judged
completions): its value and 95% Wilson interval are derived from the two, so reading a rate takes
the count and the n, and writing it recomputes value and interval exactly as they were computed.
A part that a file may lack (a run without over-refusal prompts, a plain run without a weak-
alignment sweep) is an Optional field that is ``None`` when absent and left out when written.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, cast

from refusalkit.errors import RefusalkitError
from refusalkit.evaluation.metrics import Rate

# Version 1 is the layout below; files written before the key existed have that layout too.
SCHEMA_VERSION = 1
Json = dict[str, Any]
Effect = Literal["works", "no effect", "backfires"]
Kind = Literal["removal", "addition"]
KINDS: tuple[Kind, ...] = ("removal", "addition")
TEST_SETS = ("harmful", "harmless", "over_refusal")
CONDITIONS = ("baseline", "intervention")


def _check_version(data: Mapping[str, Any], what: str) -> None:
    version = data.get("schema_version", SCHEMA_VERSION)
    if version != SCHEMA_VERSION:
        raise RefusalkitError(
            f"{what} has schema_version {version}; this refusalkit reads version "
            f"{SCHEMA_VERSION}: use the refusalkit version that wrote it"
        )


def _optional(data: Mapping[str, Any], key: str) -> Any:
    """The value of a key that some files lack (``None`` there)."""
    return data.get(key)


def _put(out: Json, key: str, value: Any) -> None:
    """Write an optional part only where the run has it."""
    if value is not None:
        out[key] = value


# ---------------------------------------------------------------------------------------------
# rates: the three layouts a rate has in the files


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


# ---------------------------------------------------------------------------------------------
# the evaluation block


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
        _put(out, "degenerate", self.degenerate.to_dict() if self.degenerate else None)
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
        degenerate = _optional(data, "degenerate")
        categories = _optional(data, "per_category")
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
        _put(out, "intervention", self.intervention)
        _put(out, "n_prompts", self.n_prompts)
        out["n_tokens"] = self.n_tokens
        out["kl"] = self.kl
        _put(out, "kl_max", self.kl_max)
        out["baseline_cross_entropy"] = self.baseline_cross_entropy
        out["intervention_cross_entropy"] = self.intervention_cross_entropy
        _put(out, "cross_entropy_increase", self.cross_entropy_increase)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Coherence:
        return cls(
            int(data["n_tokens"]),
            float(data["kl"]),
            float(data["baseline_cross_entropy"]),
            float(data["intervention_cross_entropy"]),
            _optional(data, "intervention"),
            _optional(data, "n_prompts"),
            _optional(data, "kl_max"),
            _optional(data, "cross_entropy_increase"),
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


# ---------------------------------------------------------------------------------------------
# the verdict


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


# ---------------------------------------------------------------------------------------------
# the selection


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
        _put(out, "kl_range", list(self.kl_range) if self.kl_range else None)
        _put(out, "kl_threshold", self.kl_threshold)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FilterRemoval:
        kl_range = _optional(data, "kl_range")
        return cls(
            str(data["filter"]),
            int(data["count"]),
            tuple(RemovedCandidate.from_dict(c) for c in data["best"]),
            (float(kl_range[0]), float(kl_range[1])) if kl_range is not None else None,
            _optional(data, "kl_threshold"),
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
        _put(out, "score", self.score)
        out["kl"] = self.kl
        _put(out, "n_candidates", self.n_candidates)
        _put(out, "n_kept", self.n_kept)
        _put(out, "n_kl_evaluated", self.n_kl_evaluated)
        out |= {key: self.scores[key] for key in _METHOD_SCORES if key in self.scores}
        _put(out, "diagnostics", self.diagnostics.to_dict() if self.diagnostics else None)
        _put(out, "stability", self.stability.to_dict() if self.stability else None)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SelectionSummary:
        diagnostics, stability = _optional(data, "diagnostics"), _optional(data, "stability")
        return cls(
            str(data["method"]),
            str(data["steering"]),
            int(data["position"]),
            int(data["layer"]),
            data["kl"],
            _optional(data, "score"),
            _optional(data, "n_candidates"),
            _optional(data, "n_kept"),
            _optional(data, "n_kl_evaluated"),
            {key: data[key] for key in _METHOD_SCORES if key in data},
            Diagnostics.from_dict(diagnostics) if diagnostics is not None else None,
            Stability.from_dict(stability) if stability is not None else None,
        )


# ---------------------------------------------------------------------------------------------
# weakly aligned models: the α sweep


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
        _put(
            out, "stage2_contrast", self.stage2_contrast.to_dict() if self.stage2_contrast else None
        )
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> WeakAlignment:
        contrast = _optional(data, "stage2_contrast")
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


# ---------------------------------------------------------------------------------------------
# the result files


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
class WeakAlignmentRun:
    """What a ``--weak-alignment`` run adds to the summary."""

    alpha_sweep: tuple[SweepPoint, ...]
    weak_alignment: WeakAlignment
    stage1: Stage1 | None  # two-stage runs only


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
        _check_version(data, "summary.json")
        weak = None
        if "weak_alignment" in data:
            stage1 = _optional(data, "stage1")
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
        _check_version(data, "comparison.json")
        return cls(
            str(data["model"]),
            [str(m) for m in data["working_methods"]],
            [comparison_row_from_dict(row) for row in data["rows"]],
            _adversarial(data),
            str(data["judge"]),
            data["seconds"],
        )
