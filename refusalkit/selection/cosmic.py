"""COSMIC selection (Siu et al., ACL Findings 2025), the pure part: evaluation layers, cosine
scores and the filters of SPEC §3, over already computed numbers. No model access here."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from refusalkit.config import Aggregation, LLowConvention, Steering, check_cosmic
from refusalkit.errors import RefusalkitError
from refusalkit.selection.filters import ZERO, ZERO_HINT, all_filtered, first_within_kl, zero_mask


@dataclass(frozen=True)
class CosmicSettings:
    steering: Steering = "lce"  # "lce": ablation everywhere + actadd at l; "ace": affine edit at l
    l_low_fraction: float = 0.1  # fraction of layers with the lowest harmful/harmless similarity
    l_low_second_half: bool = False  # restrict L_low to the second half (weakly aligned models)
    l_low_layers: tuple[int, ...] | None = None  # explicit L_low, overriding the two above
    aggregation: Aggregation = "mean"  # "mean" over L_low layers (reference code) or "concat"
    prune_layer_fraction: float = 0.2  # drop candidates at layers >= floor((1 - f) * L)
    # Drop candidates at layers < min_layer too (two-stage weak alignment: a steering vector added
    # before the stage-1 edit's layer would have its refusal component projected out there).
    min_layer: int = 0
    kl_threshold: float = 0.1
    median_peak_filter: bool = True
    l_low_convention: LLowConvention = "block-input"  # or "reference": block outputs (SPEC §3.1)

    def __post_init__(self) -> None:
        # The same checks (and messages) as a RunConfig's: refusalkit.config holds them once.
        check_cosmic(
            self.steering,
            self.aggregation,
            self.l_low_fraction,
            self.prune_layer_fraction,
            self.kl_threshold,
            self.l_low_convention,
        )

    def reading_points(self, layers: Sequence[int]) -> list[int]:
        """The residual points (``refusalkit.activations``) the scores read for L_low ``layers``:
        block ``l``'s input, or under the reference convention its output (point ``l + 1``, read
        before any edit hooked on block ``l + 1``'s input, as ``hidden_states[l + 1]`` is; for the
        last block, after the final norm)."""
        shift = 1 if self.l_low_convention == "reference" else 0
        return [layer + shift for layer in layers]

    def max_layer(self, n_layers: int) -> int:
        """Candidates at layers >= this are dropped by the layer filter."""
        return math.floor((1.0 - self.prune_layer_fraction) * n_layers + 1e-9)


@dataclass(frozen=True)
class EvaluationLayers:
    layers: tuple[int, ...]
    similarities: tuple[float, ...]  # cos(mean harmful, mean harmless) at position -1, per layer
    note: str


def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    a64, b64 = a.double().flatten(), b.double().flatten()
    return float((a64 @ b64) / (a64.norm() * b64.norm()).clamp_min(1e-30))


def low_similarity_layers(
    harmful_last: torch.Tensor, harmless_last: torch.Tensor, settings: CosmicSettings
) -> EvaluationLayers:
    """``L_low``: the ⌊fraction·L⌋ layers where the class means at position -1 are least similar."""
    n_layers = int(harmful_last.shape[0])
    similarities = tuple(cosine(harmful_last[l], harmless_last[l]) for l in range(n_layers))
    if settings.l_low_layers:
        bad = [l for l in settings.l_low_layers if not 0 <= l < n_layers]
        if bad:
            raise RefusalkitError(f"L_low layers {bad} out of range 0..{n_layers - 1}")
        return EvaluationLayers(
            tuple(sorted(settings.l_low_layers)), similarities, "set by the user"
        )
    half = n_layers // 2 if settings.l_low_second_half else 0
    # With a min_layer every kept candidate acts at or after it, so readings before it would be the
    # clean ones for all of them (equal scores, a pick by tie-break): read from min_layer on.
    first = min(max(half, settings.min_layer), n_layers - 1)
    pool = list(range(first, n_layers))
    # The fraction is of all layers; the second-half pool can hold fewer than that.
    wanted = min(math.floor(settings.l_low_fraction * n_layers + 1e-9), len(pool))
    note = f"the {wanted} least similar of {len(pool)} layers"
    if wanted < 1:
        wanted = 1
        note = f"⌊{settings.l_low_fraction}·{n_layers}⌋ = 0 layers; using the single least similar"
    chosen = sorted(pool, key=lambda l: (similarities[l], l))[:wanted]
    if settings.min_layer > half:
        note += f" (from layer {first} on, where the kept candidates act)"
    elif settings.l_low_second_half:
        note += " (second half only)"
    return EvaluationLayers(tuple(sorted(chosen)), similarities, note)


def aggregate(per_layer_means: torch.Tensor, aggregation: str) -> torch.Tensor:
    """One unit vector from per-layer mean activations ``[|L_low|, d]``."""
    vector = (
        per_layer_means.double().mean(0)
        if aggregation == "mean"
        else per_layer_means.double().flatten()
    )
    return vector / vector.norm().clamp_min(1e-30)


# In the order the filters run; on a tie the earlier filter is named.
FILTER_HINTS = {
    "median_peak": "disable the median-peak filter with --no-median-peak-filter",
    ZERO: ZERO_HINT,
    "layer": "keep later layers with a smaller --prune-layer-fraction",
    "kl": "allow more drift with a larger --kl-threshold",
    "nan": "scores were NaN: check the model's activations (try --dtype float32)",
}


@dataclass
class CandidateRecord:
    position: int
    layer: int
    s_comply: float
    s_refuse: float
    kl: float = math.nan
    status: str = "kept"  # kept | selected | median_peak | zero | layer | nan | kl | not_needed

    @property
    def score(self) -> float:
        return self.s_comply + self.s_refuse

    def as_dict(self) -> dict[str, Any]:
        return {
            "position": self.position,
            "layer": self.layer,
            "s_comply": self.s_comply,
            "s_refuse": self.s_refuse,
            "score": self.score,
            "kl": self.kl,
            "status": self.status,
        }


@dataclass
class SelectionOutcome:
    selected: CandidateRecord
    records: list[CandidateRecord]
    median_layers: dict[str, int | None] = field(default_factory=dict)

    @property
    def n_candidates(self) -> int:
        return len(self.records)

    @property
    def n_kept(self) -> int:
        """Candidates that survive the median-peak, zero, layer and NaN filters (the KL threshold
        is checked lazily in score order, so only up to the pick)."""
        return sum(r.status in ("kept", "selected", "kl", "not_needed") for r in self.records)

    def ranking(self) -> list[CandidateRecord]:
        return sorted(self.records, key=lambda r: -r.score if not math.isnan(r.score) else math.inf)


def lower_median(values: Sequence[int]) -> int:
    ordered = sorted(values)
    return ordered[(len(ordered) - 1) // 2]


def peak_layers(scores: torch.Tensor) -> list[int]:
    """argmax over layers per row, NaN treated as -inf (as the reference does)."""
    return [int(i) for i in torch.nan_to_num(scores.double(), nan=-math.inf).argmax(dim=1)]


def select(
    s_comply: torch.Tensor,
    s_refuse: torch.Tensor,
    settings: CosmicSettings,
    kl_of: Callable[[int, int], float],
    *,
    zero: torch.Tensor | None = None,
) -> SelectionOutcome:
    """Apply the filters of SPEC §3 in order and pick ``argmax(S_refuse + S_comply)``.

    ``s_comply``/``s_refuse`` are ``[P, L]`` with NaN where a candidate was not scored (only
    candidates the layer filter drops may be unscored). ``kl_of(position, layer)`` is called lazily
    in descending score order until a candidate passes the KL threshold.

    ``zero`` (``[P, L]`` bool, None for none) marks candidates whose direction is exactly zero:
    every intervention built from them is the identity, so they cannot be a refusal direction,
    yet with their clean scores and KL 0 they would pass every filter of SPEC §3. The zero filter
    drops them after the median-peak filter (whose peak layers still see their scores, which are
    real: the clean ones) and before the layer, NaN and KL filters.
    """
    n_positions, n_layers = s_comply.shape
    records = {
        (p - n_positions, l): CandidateRecord(
            p - n_positions, l, float(s_comply[p, l]), float(s_refuse[p, l])
        )
        for p in range(n_positions)
        for l in range(n_layers)
    }
    medians: dict[str, int | None] = {"ablation": None, "addition": None}
    if settings.median_peak_filter and n_positions > 1:
        m_abl = lower_median(peak_layers(s_comply[:-1]))
        m_add = lower_median(peak_layers(s_refuse[:-1]))
        medians = {"ablation": m_abl, "addition": m_add}
        for l in range(n_layers):
            if l > m_abl and l > m_add:
                records[(-1, l)].status = "median_peak"
    zero = zero_mask(zero, n_positions, n_layers)
    for (position, l), record in records.items():
        if record.status == "kept" and bool(zero[position, l]):
            record.status = ZERO
    cutoff = settings.max_layer(n_layers)
    for (_, l), record in records.items():
        if record.status == "kept" and not settings.min_layer <= l < cutoff:
            record.status = "layer"
    for record in records.values():
        if record.status == "kept" and math.isnan(record.score):
            record.status = "nan"
    survivors = sorted(
        (r for r in records.values() if r.status == "kept"),
        # Exact ties go to the earlier position, then the earlier layer: the reference's argmax
        # over its [position, layer] score table (position-major).
        key=lambda r: (-r.score, r.position, r.layer),
    )
    selected = first_within_kl(survivors, kl_of, settings.kl_threshold)
    ordered = [records[(p - n_positions, l)] for p in range(n_positions) for l in range(n_layers)]
    if selected is None:
        raise all_filtered("COSMIC", ordered, FILTER_HINTS)
    return SelectionOutcome(selected, ordered, medians)
