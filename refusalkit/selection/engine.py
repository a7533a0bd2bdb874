"""The model-facing part of COSMIC: the forwards that produce S_comply, S_refuse and KL.

Work is limited to what the answer needs (SPEC §10), and every shortcut is exact up to float noise
(``tests/test_engine.py`` checks each against the straightforward ``tests/oracle.py``). The
forwards' own shortcuts (stopping at the last layer read, starting from cached clean block inputs,
several candidates per forward, packed prompts, a sparse last block) are described with them in
:mod:`refusalkit.selection.validation_forwards`; COSMIC's are:

- candidates at layers the layer filter drops are not scored, except at the positions the
  median-peak filter reads (positions other than -1, whose peak layers are taken over all layers);
- KL is computed lazily, in descending score order, only until a candidate passes;
- candidates whose direction is exactly zero (layer 0 at the post-instruction tokens: the same
  token embedding for every prompt) make identity interventions, and the zero filter drops them.
  COSMIC still needs their scores (the median-peak filter reads every layer of the other
  positions): they get the clean ones without a forward, which also keeps their exact ties with
  the clean readings. The output-based selectors do not score them at all.

The output-based engine is :mod:`refusalkit.selection.refusal_score_engine`; this module
re-exports it with the shared machinery, the names the rest of refusalkit imports from here.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from refusalkit.activations import EncodedBatch
from refusalkit.directions import CandidateSet
from refusalkit.models.adapter import ModelAdapter
from refusalkit.selection.cosmic import (
    CosmicSettings,
    EvaluationLayers,
    SelectionOutcome,
    aggregate,
    cosine,
    select,
)
from refusalkit.selection.refusal_score_engine import RefusalScoreEngine
from refusalkit.selection.validation_forwards import (
    Candidate,
    CleanPass,
    EngineOptions,
    ValidationForwards,
    WorkCounter,
    addition_edits,
    identity_candidates,
    removal_edits,
    score_removal_and_addition,
)

__all__ = [
    "Candidate",
    "CleanPass",
    "CosmicEngine",
    "EngineOptions",
    "RefusalScoreEngine",
    "ValidationForwards",
    "WorkCounter",
    "identity_candidates",
]


class CosmicEngine:
    """COSMIC selection (SPEC §3): S_comply, S_refuse and KL of the candidates that need them,
    then :func:`~refusalkit.selection.cosmic.select`."""

    def __init__(
        self,
        adapter: ModelAdapter,
        candidates: CandidateSet,
        evaluation_layers: EvaluationLayers,
        settings: CosmicSettings,
        harmful_val: Sequence[EncodedBatch],
        harmless_val: Sequence[EncodedBatch],
        options: EngineOptions | None = None,
    ) -> None:
        self.adapter = adapter
        self.candidates = candidates
        self.l_low = list(evaluation_layers.layers)
        self.settings = settings
        # Clean block inputs are cached for every layer an intervention can start at; the scores
        # read L_low at the residual points of the run's convention.
        self.forwards = ValidationForwards(
            adapter, harmful_val, harmless_val,
            cache_up_to=settings.max_layer(adapter.n_layers),
            read_layers=settings.reading_points(self.l_low),
            read_before_edits=settings.l_low_convention == "reference", options=options,
        )  # fmt: skip
        self.work = self.forwards.work
        self.identity = identity_candidates(candidates)
        # Baselines (SPEC §3.2): b̄ from harmful val, ā from harmless val, no intervention.
        self.harmful_baseline = aggregate(self.forwards.harmful.l_low_means, settings.aggregation)
        self.harmless_baseline = aggregate(self.forwards.harmless.l_low_means, settings.aggregation)

    def s_comply(self, position: int, layer: int) -> float:
        """cos(harmful val under removal, harmless baseline ā)."""
        return self._comply([(position, layer)])[0]

    def s_refuse(self, position: int, layer: int) -> float:
        """cos(harmless val under addition α=1, harmful baseline b̄)."""
        return self._refuse([(position, layer)])[0]

    def kl(self, position: int, layer: int) -> float:
        """Mean over harmless val of KL(p_clean ‖ p_removed) at the last prompt position."""
        if self.identity[position, layer]:
            return 0.0
        edits = removal_edits(self.candidates, self.settings.steering, [(position, layer)])
        return self.forwards.kls(edits)[0]

    def _cosines(self, means: torch.Tensor, baseline: torch.Tensor) -> list[float]:
        return [cosine(aggregate(m, self.settings.aggregation), baseline) for m in means]

    def _comply(self, group: Sequence[Candidate]) -> list[float]:
        edits = removal_edits(self.candidates, self.settings.steering, group)
        means = self.forwards.reading_means(self.forwards.harmful, edits, "s_comply")
        return self._cosines(means, self.harmless_baseline)

    def _refuse(self, group: Sequence[Candidate]) -> list[float]:
        edits = addition_edits(self.candidates, self.settings.steering, group)
        means = self.forwards.reading_means(self.forwards.harmless, edits, "s_refuse")
        return self._cosines(means, self.harmful_baseline)

    # -- selection ------------------------------------------------------------------------

    def needs_score(self, position: int, layer: int) -> bool:
        if self.settings.min_layer <= layer < self.settings.max_layer(self.adapter.n_layers):
            return True
        # Dropped by the layer filter, but the median-peak filter reads the peak layer of every
        # position except -1 over all layers.
        return (
            self.settings.median_peak_filter and self.candidates.n_positions > 1 and position != -1
        )

    def score_all(self) -> tuple[torch.Tensor, torch.Tensor]:
        n_positions, n_layers = self.candidates.n_positions, self.candidates.n_layers
        s_comply = torch.full((n_positions, n_layers), math.nan, dtype=torch.float64)
        s_refuse = torch.full((n_positions, n_layers), math.nan, dtype=torch.float64)
        todo = [
            (p, l)
            for p in range(-n_positions, 0)
            for l in range(n_layers)
            if self.needs_score(p, l)
        ]
        for p, l in todo:
            if self.identity[p, l]:
                s_comply[p, l] = cosine(self.harmful_baseline, self.harmless_baseline)
                s_refuse[p, l] = cosine(self.harmless_baseline, self.harmful_baseline)
        live = [c for c in todo if not self.identity[c]]
        steering = self.settings.steering
        score_removal_and_addition(
            self.forwards, steering, live, (s_comply, s_refuse), (self._comply, self._refuse),
            f"COSMIC-{steering.upper()} scoring",
        )  # fmt: skip
        return s_comply, s_refuse

    def run(self) -> SelectionOutcome:
        s_comply, s_refuse = self.score_all()
        return select(s_comply, s_refuse, self.settings, self.kl, zero=self.identity)
