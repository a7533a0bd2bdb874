"""The substring variant of output-based selection (SPEC §4): score every candidate by the
substring-judged refusal rate of short greedy generations instead of the refusal-token log-odds.

``bypass`` = refusal rate on harmful validation prompts under removal, ``induce`` = refusal rate on
harmless validation prompts under addition. The filters and the choice are the log-odds
selector's (:func:`select_by_refusal_score`: zero, layer and induce filters, lazy KL,
``argmin bypass``; ties go to the earlier layer, then the earlier position). The induce threshold
keeps its log-odds meaning: a rate ``r`` passes when ``log(r / (1 − r)) ≥ threshold``, i.e.
``r ≥ sigmoid(threshold)`` — the default 0 asks, as the log-odds filter does, that addition makes
refusal more likely than not.

This path is straightforward by design (one generation per candidate and class, no shortcuts):
generations are the expensive part and cannot reuse the engine's readings.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from refusalkit.directions import CandidateSet
from refusalkit.evaluation.generation import generate
from refusalkit.evaluation.judges import SubstringJudge
from refusalkit.evaluation.scoring import ResponseScores, first_position_kl, teacher_forced
from refusalkit.interventions import Intervention, addition, removal
from refusalkit.models.adapter import ModelAdapter
from refusalkit.progress import bar
from refusalkit.prompts.chat import ChatFormat
from refusalkit.prompts.datasets import Prompt
from refusalkit.selection.engine import identity_candidates
from refusalkit.selection.refusal_score import (
    RefusalScoreOutcome,
    RefusalScoreSettings,
    select_by_refusal_score,
)


def rate_threshold(log_odds_threshold: float) -> float:
    """The refusal rate whose log-odds equal ``log_odds_threshold`` (0 → 0.5); stable for any
    threshold (a very negative one, to switch the filter off, must not overflow)."""
    if log_odds_threshold >= 0:
        return 1.0 / (1.0 + math.exp(-log_odds_threshold))
    odds = math.exp(log_odds_threshold)
    return odds / (1.0 + odds)


@dataclass
class SubstringScoreEngine:
    adapter: ModelAdapter
    chat: ChatFormat
    candidates: CandidateSet
    settings: RefusalScoreSettings
    harmful_val: Sequence[Prompt]
    harmless_val: Sequence[Prompt]
    judge: SubstringJudge
    max_new_tokens: int = 8
    batch_size: int = 32
    generations: int = 0  # prompts generated for, across all candidates (the cost)
    _clean: ResponseScores | None = None

    def refusal_rate(self, prompts: Sequence[Prompt], intervention: Intervention) -> float:
        completions = generate(
            self.adapter,
            self.chat,
            prompts,
            intervention=intervention,
            max_new_tokens=self.max_new_tokens,
            batch_size=self.batch_size,
            description="",
        )
        self.generations += len(prompts)
        return sum(self.judge.is_refusal(c.text) for c in completions) / len(prompts)

    def kl(self, position: int, layer: int) -> float:
        """Mean KL(p_clean ‖ p_removed) at the last prompt position over harmless val."""
        intervention = removal(self.candidates, self.settings.steering, position, layer)
        empty: list[tuple[int, ...]] = [()] * len(self.harmless_val)
        if self._clean is None:
            self._clean = teacher_forced(
                self.adapter, self.chat, self.harmless_val, empty, description=""
            )
        changed = teacher_forced(
            self.adapter, self.chat, self.harmless_val, empty, intervention=intervention,
            description="",
        )  # fmt: skip
        return float(first_position_kl(self._clean, changed).mean())

    def run(self) -> RefusalScoreOutcome:
        n_positions, n_layers = self.candidates.n_positions, self.candidates.n_layers
        bypass = torch.full((n_positions, n_layers), math.nan, dtype=torch.float64)
        induce = torch.full((n_positions, n_layers), math.nan, dtype=torch.float64)
        # Candidates the zero and layer filters drop are never scored (nor generated for).
        zero = identity_candidates(self.candidates)
        cutoff = self.settings.max_layer(n_layers)
        todo = [(p, l) for p in range(-n_positions, 0) for l in range(cutoff) if not zero[p, l]]
        steering = self.settings.steering
        progress = bar(f"refusal-substring-{steering.upper()} scoring", len(todo))
        for position, layer in todo:
            bypass[position, layer] = self.refusal_rate(
                self.harmful_val, removal(self.candidates, steering, position, layer)
            )
            induce[position, layer] = self.refusal_rate(
                self.harmless_val, addition(self.candidates, steering, position, layer)
            )
            progress.update()
        progress.close()
        # The induce filter compares log-odds; a rate passes iff it reaches sigmoid(threshold).
        threshold = rate_threshold(self.settings.induce_threshold)
        rate_settings = RefusalScoreSettings(
            steering=steering,
            prune_layer_fraction=self.settings.prune_layer_fraction,
            kl_threshold=self.settings.kl_threshold,
            induce_threshold=threshold,
        )
        return select_by_refusal_score(bypass, induce, rate_settings, self.kl, zero=zero)
