"""The output-based engine (SPEC §4, Arditi et al.): each candidate's refusal log-odds on the
validation prompts under its removal and its addition, from the shared forwards of
:mod:`refusalkit.selection.validation_forwards`. Candidates the zero and layer filters drop are
never scored."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from refusalkit.activations import EncodedBatch
from refusalkit.directions import CandidateSet
from refusalkit.interventions import ResidualEdit
from refusalkit.models.adapter import ModelAdapter
from refusalkit.selection.refusal_score import (
    RefusalScoreOutcome,
    RefusalScoreSettings,
    RefusalTokens,
    refusal_log_odds,
    select_by_refusal_score,
)
from refusalkit.selection.validation_forwards import (
    Candidate,
    CleanPass,
    EngineOptions,
    ValidationForwards,
    addition_edits,
    identity_candidates,
    removal_edits,
    score_removal_and_addition,
)


class RefusalScoreEngine:
    """Output-based selection (SPEC §4): refusal log-odds under removal and addition."""

    def __init__(
        self,
        adapter: ModelAdapter,
        candidates: CandidateSet,
        settings: RefusalScoreSettings,
        tokens: RefusalTokens,
        harmful_val: Sequence[EncodedBatch],
        harmless_val: Sequence[EncodedBatch],
        options: EngineOptions | None = None,
    ) -> None:
        self.adapter = adapter
        self.candidates = candidates
        self.settings = settings
        self.tokens = tokens
        # Zero directions: dropped by the zero filter, so never scored.
        self.identity = identity_candidates(candidates)
        self.forwards = ValidationForwards(
            adapter, harmful_val, harmless_val,
            cache_up_to=max(0, settings.max_layer(adapter.n_layers) - 1), options=options,
        )  # fmt: skip
        self.work = self.forwards.work

    def _mean_scores(self, clean: CleanPass, edits: ResidualEdit, kind: str) -> list[float]:
        total = torch.zeros(edits.copies, dtype=torch.float64)
        for _, logits in self.forwards.column_logits(clean, edits, kind):
            scores = refusal_log_odds(logits.reshape(-1, logits.shape[-1]), self.tokens.ids)
            total += scores.reshape(edits.copies, -1).sum(-1).cpu()
        return [float(t) / clean.n_prompts for t in total]

    def bypass(self, position: int, layer: int) -> float:
        return self._bypass([(position, layer)])[0]

    def induce(self, position: int, layer: int) -> float:
        return self._induce([(position, layer)])[0]

    def _bypass(self, group: Sequence[Candidate]) -> list[float]:
        edits = removal_edits(self.candidates, self.settings.steering, group)
        return self._mean_scores(self.forwards.harmful, edits, "bypass")

    def _induce(self, group: Sequence[Candidate]) -> list[float]:
        edits = addition_edits(self.candidates, self.settings.steering, group)
        return self._mean_scores(self.forwards.harmless, edits, "induce")

    def kl(self, position: int, layer: int) -> float:
        if self.identity[position, layer]:
            return 0.0
        edits = removal_edits(self.candidates, self.settings.steering, [(position, layer)])
        return self.forwards.kls(edits)[0]

    def run(self) -> RefusalScoreOutcome:
        n_positions, n_layers = self.candidates.n_positions, self.candidates.n_layers
        bypass = torch.full((n_positions, n_layers), math.nan, dtype=torch.float64)
        induce = torch.full((n_positions, n_layers), math.nan, dtype=torch.float64)
        # Candidates the zero and layer filters drop are never scored.
        cutoff = self.settings.max_layer(n_layers)
        live = [
            (p, l) for p in range(-n_positions, 0) for l in range(cutoff) if not self.identity[p, l]
        ]
        steering = self.settings.steering
        score_removal_and_addition(
            self.forwards, steering, live, (bypass, induce), (self._bypass, self._induce),
            f"refusal-score-{steering.upper()} scoring",
        )  # fmt: skip
        return select_by_refusal_score(bypass, induce, self.settings, self.kl, zero=self.identity)
