"""The model-facing part of COSMIC: the forwards that produce S_comply, S_refuse and KL.

Work is limited to what the answer needs (SPEC §10), and every shortcut is exact:
- candidates at layers the layer filter drops are not scored, except at the positions the
  median-peak filter reads (positions other than -1, whose peak layers are taken over all layers);
- KL is computed lazily, in descending score order, only until a candidate passes;
- forwards that only read ``L_low`` stop after the last ``L_low`` layer; KL forwards compute
  logits at the last position only;
- single-layer interventions at layer ``l`` (activation addition, ACE) start from the cached
  clean input of block ``l``, and when ``l`` is after every ``L_low`` layer they cannot change
  the readings at all, so the clean readings are used without a forward.
The straightforward computation lives in ``tests/oracle.py`` and the tests check both agree.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import torch

from refusalkit.activations import EncodedBatch, forward
from refusalkit.directions import CandidateSet
from refusalkit.interventions import (
    ActivationAddition,
    AffineEdit,
    DirectionalAblation,
    Intervention,
    applied,
)
from refusalkit.models.adapter import ModelAdapter
from refusalkit.progress import bar
from refusalkit.selection.cosmic import (
    CosmicSettings,
    EvaluationLayers,
    SelectionOutcome,
    aggregate,
    cosine,
    select,
)
from refusalkit.selection.refusal_score import (
    RefusalScoreOutcome,
    RefusalScoreSettings,
    RefusalTokens,
    refusal_log_odds,
    select_by_refusal_score,
)


@dataclass
class CleanPass:
    """What one clean pass over a validation class provides."""

    batches: list[EncodedBatch]
    block_inputs: list[dict[int, torch.Tensor]]  # per batch: layer -> [B, T, d] clean block input
    l_low_means: torch.Tensor  # [|L_low|, d] float64, mean over prompts at position -1
    last_logprobs: list[torch.Tensor] | None  # per batch [B, V] float32 (harmless only)


@dataclass
class WorkCounter:
    """Machine-independent cost: prompts × blocks actually run (a full prompt-forward = L)."""

    block_forwards: int = 0
    prompt_forwards: int = 0
    per_kind: dict[str, int] = field(default_factory=dict)

    def add(self, kind: str, prompts: int, blocks: int) -> None:
        self.block_forwards += prompts * blocks
        self.prompt_forwards += prompts
        self.per_kind[kind] = self.per_kind.get(kind, 0) + prompts * blocks


def removal(candidates: CandidateSet, steering: str, position: int, layer: int) -> Intervention:
    direction = candidates.direction(position, layer)
    if steering == "lce":
        return DirectionalAblation(direction)
    return AffineEdit(direction, candidates.reference(position, layer), layer, alpha=0.0)


def addition(
    candidates: CandidateSet, steering: str, position: int, layer: int, alpha: float = 1.0
) -> Intervention:
    direction = candidates.direction(position, layer)
    if steering == "lce":
        return ActivationAddition(direction, layer, alpha)
    return AffineEdit(direction, candidates.reference(position, layer), layer, alpha=alpha)


def first_touched_layer(intervention: Intervention) -> int:
    return 0 if isinstance(intervention, DirectionalAblation) else intervention.layer


class ValidationForwards:
    """Clean passes over the two validation sets, and intervened forwards that reuse them.

    The clean pass caches every block input an intervention can start at (full sequences), the
    mean block input at position -1 for the ``read_layers`` (COSMIC's ``L_low``), and, for the
    harmless set, last-position log-probs (the KL reference).
    """

    def __init__(
        self,
        adapter: ModelAdapter,
        harmful_val: Sequence[EncodedBatch],
        harmless_val: Sequence[EncodedBatch],
        *,
        cache_up_to: int,
        read_layers: Sequence[int] = (),
    ) -> None:
        self.adapter = adapter
        self.read_layers = list(read_layers)
        self.cache_layers = list(range(min(adapter.n_layers, cache_up_to + 1)))
        self.work = WorkCounter()
        self.harmful = self._clean_pass(harmful_val, logits=False, label="harmful val")
        self.harmless = self._clean_pass(harmless_val, logits=True, label="harmless val")

    def _clean_pass(self, batches: Sequence[EncodedBatch], logits: bool, label: str) -> CleanPass:
        inputs, logprobs = [], []
        total = torch.zeros(len(self.read_layers), self.adapter.hidden_size, dtype=torch.float64)
        count = 0
        progress = bar(f"clean pass: {label}", len(batches))
        for batch in batches:
            out = forward(
                self.adapter, batch, read_layers=self.cache_layers, positions=None, logits=logits
            )
            inputs.append({l: out.readings[l].to(self.adapter.dtype) for l in self.cache_layers})
            for k, layer in enumerate(self.read_layers):
                total[k] += out.readings[layer][:, -1].double().sum(0).cpu()
            if logits:
                assert out.last_logits is not None
                logprobs.append(torch.log_softmax(out.last_logits, dim=-1))
            count += batch.size
            blocks = self.adapter.n_layers if logits else max(self.cache_layers) + 1
            self.work.add("clean", batch.size, blocks)
            progress.update()
        progress.close()
        return CleanPass(list(batches), inputs, total / count, logprobs if logits else None)

    def reading_means(
        self, clean: CleanPass, intervention: Intervention, kind: str
    ) -> torch.Tensor:
        """Mean block input at position -1 for ``read_layers`` under ``intervention``."""
        start = first_touched_layer(intervention)
        # Readings before the first touched layer are the clean ones: only later layers are run.
        means = clean.l_low_means.clone()
        affected = [k for k, layer in enumerate(self.read_layers) if layer >= start]
        if not affected:
            return means
        layers = [self.read_layers[k] for k in affected]
        total = torch.zeros(len(affected), self.adapter.hidden_size, dtype=torch.float64)
        count = 0
        with applied(self.adapter, intervention):
            for index, batch in enumerate(clean.batches):
                states = clean.block_inputs[index][start] if start > 0 else None
                out = forward(
                    self.adapter, batch, read_layers=layers, positions=[-1],
                    start_layer=start, start_states=states,
                )  # fmt: skip
                for j, layer in enumerate(layers):
                    total[j] += out.readings[layer][:, 0].double().sum(0).cpu()
                count += batch.size
                self.work.add(kind, batch.size, max(layers) + 1 - start)
        means[affected] = total / count
        return means

    def last_logits(
        self, clean: CleanPass, intervention: Intervention, kind: str
    ) -> Iterator[tuple[int, torch.Tensor]]:
        """(batch index, last-position logits) for every batch under ``intervention``."""
        start = first_touched_layer(intervention)
        with applied(self.adapter, intervention):
            for index, batch in enumerate(clean.batches):
                states = clean.block_inputs[index][start] if start > 0 else None
                out = forward(
                    self.adapter, batch, logits=True, start_layer=start, start_states=states
                )
                assert out.last_logits is not None
                self.work.add(kind, batch.size, self.adapter.n_layers - start)
                yield index, out.last_logits

    def kl(self, intervention: Intervention) -> float:
        """Mean over harmless val of KL(p_clean ‖ p_intervened) at the last prompt position."""
        assert self.harmless.last_logprobs is not None
        total, count = 0.0, 0
        for index, logits in self.last_logits(self.harmless, intervention, "kl"):
            clean = self.harmless.last_logprobs[index]
            changed = torch.log_softmax(logits, dim=-1)
            total += float((clean.exp() * (clean - changed)).sum(-1).double().sum())
            count += int(logits.shape[0])
        return total / count


class CosmicEngine:
    def __init__(
        self,
        adapter: ModelAdapter,
        candidates: CandidateSet,
        evaluation_layers: EvaluationLayers,
        settings: CosmicSettings,
        harmful_val: Sequence[EncodedBatch],
        harmless_val: Sequence[EncodedBatch],
    ) -> None:
        self.adapter = adapter
        self.candidates = candidates
        self.l_low = list(evaluation_layers.layers)
        self.settings = settings
        # Clean block inputs are cached for every layer an intervention can start at.
        self.forwards = ValidationForwards(
            adapter, harmful_val, harmless_val,
            cache_up_to=max(max(self.l_low), settings.max_layer(adapter.n_layers)),
            read_layers=self.l_low,
        )  # fmt: skip
        self.work = self.forwards.work
        # Baselines (SPEC §3.2): b̄ from harmful val, ā from harmless val, no intervention.
        self.harmful_baseline = aggregate(self.forwards.harmful.l_low_means, settings.aggregation)
        self.harmless_baseline = aggregate(self.forwards.harmless.l_low_means, settings.aggregation)

    def s_comply(self, position: int, layer: int) -> float:
        """cos(harmful val under removal, harmless baseline ā)."""
        intervention = removal(self.candidates, self.settings.steering, position, layer)
        means = self.forwards.reading_means(self.forwards.harmful, intervention, "s_comply")
        return cosine(aggregate(means, self.settings.aggregation), self.harmless_baseline)

    def s_refuse(self, position: int, layer: int) -> float:
        """cos(harmless val under addition α=1, harmful baseline b̄)."""
        intervention = addition(self.candidates, self.settings.steering, position, layer)
        means = self.forwards.reading_means(self.forwards.harmless, intervention, "s_refuse")
        return cosine(aggregate(means, self.settings.aggregation), self.harmful_baseline)

    def kl(self, position: int, layer: int) -> float:
        """Mean over harmless val of KL(p_clean ‖ p_removed) at the last prompt position."""
        return self.forwards.kl(removal(self.candidates, self.settings.steering, position, layer))

    # -- selection ------------------------------------------------------------------------

    def needs_score(self, position: int, layer: int) -> bool:
        if layer < self.settings.max_layer(self.adapter.n_layers):
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
        progress = bar(f"COSMIC-{self.settings.steering.upper()} scoring", len(todo))
        for position, layer in todo:
            s_comply[position, layer] = self.s_comply(position, layer)
            s_refuse[position, layer] = self.s_refuse(position, layer)
            progress.update()
        progress.close()
        return s_comply, s_refuse

    def run(self) -> SelectionOutcome:
        s_comply, s_refuse = self.score_all()
        return select(s_comply, s_refuse, self.settings, self.kl)


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
    ) -> None:
        self.adapter = adapter
        self.candidates = candidates
        self.settings = settings
        self.tokens = tokens
        self.forwards = ValidationForwards(
            adapter, harmful_val, harmless_val,
            cache_up_to=max(0, settings.max_layer(adapter.n_layers) - 1),
        )  # fmt: skip
        self.work = self.forwards.work

    def _mean_score(self, clean: CleanPass, intervention: Intervention, kind: str) -> float:
        total, count = 0.0, 0
        for _, logits in self.forwards.last_logits(clean, intervention, kind):
            total += float(refusal_log_odds(logits, self.tokens.ids).sum())
            count += int(logits.shape[0])
        return total / count

    def bypass(self, position: int, layer: int) -> float:
        intervention = removal(self.candidates, self.settings.steering, position, layer)
        return self._mean_score(self.forwards.harmful, intervention, "bypass")

    def induce(self, position: int, layer: int) -> float:
        intervention = addition(self.candidates, self.settings.steering, position, layer)
        return self._mean_score(self.forwards.harmless, intervention, "induce")

    def kl(self, position: int, layer: int) -> float:
        return self.forwards.kl(removal(self.candidates, self.settings.steering, position, layer))

    def run(self) -> RefusalScoreOutcome:
        n_positions, n_layers = self.candidates.n_positions, self.candidates.n_layers
        bypass = torch.full((n_positions, n_layers), math.nan, dtype=torch.float64)
        induce = torch.full((n_positions, n_layers), math.nan, dtype=torch.float64)
        cutoff = self.settings.max_layer(n_layers)  # later candidates are dropped: never scored
        todo = [(p, l) for p in range(-n_positions, 0) for l in range(cutoff)]
        progress = bar(f"refusal-score-{self.settings.steering.upper()} scoring", len(todo))
        for position, layer in todo:
            bypass[position, layer] = self.bypass(position, layer)
            induce[position, layer] = self.induce(position, layer)
            progress.update()
        progress.close()
        return select_by_refusal_score(bypass, induce, self.settings, self.kl)
