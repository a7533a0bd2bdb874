"""What SPEC §9 reads from the model: per-category means at one position, and refusal under an
ablation — the first-position refusal log-odds (continuous, one forward per prompt; the run's
own ``teacher_forced`` scoring) and the judged refusal of short greedy completions."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from refusalkit.activations import encode_batches, forward
from refusalkit.evaluation.generation import generate
from refusalkit.evaluation.judges import SubstringJudge
from refusalkit.evaluation.scoring import ResponseScores, teacher_forced
from refusalkit.interventions import DirectionalAblation, Intervention, applied
from refusalkit.models.adapter import ModelAdapter
from refusalkit.progress import track
from refusalkit.prompts.chat import ChatFormat
from refusalkit.prompts.datasets import Prompt


def mean_at(
    adapter: ModelAdapter,
    chat: ChatFormat,
    prompts: Sequence[Prompt],
    position: int,
    batch_size: int,
    description: str,
) -> torch.Tensor:
    """Mean block input at ``position`` over ``prompts``, every layer: ``[L, d]`` float64."""
    layers = list(range(adapter.n_layers))
    total = torch.zeros(adapter.n_layers, adapter.hidden_size, dtype=torch.float64)
    for batch in track(encode_batches(chat, prompts, batch_size, adapter.device), description):
        readings = forward(adapter, batch, read_layers=layers, positions=[position]).readings
        for layer in layers:
            total[layer] += readings[layer][:, 0].double().sum(0).cpu()
    return total / len(prompts)


def ablations(directions: torch.Tensor) -> list[Intervention]:
    """Directional ablation of each row (applied together: for orthonormal rows, the projection
    onto their orthogonal complement)."""
    return [DirectionalAblation(row.float()) for row in directions]


def first_position(
    adapter: ModelAdapter,
    chat: ChatFormat,
    prompts: Sequence[Prompt],
    interventions: Sequence[Intervention],
) -> ResponseScores:
    """The prompts scored at the first response position (``teacher_forced`` on the prompt alone)
    with ``interventions`` applied together."""
    with applied(adapter, *interventions):
        return teacher_forced(
            adapter, chat, prompts, [()] * len(prompts), description="geometry: first position"
        )


@dataclass(frozen=True)
class Refusal:
    log_odds: list[float]  # per prompt, first response position
    judged: list[bool]  # per prompt, substring judge on a short greedy completion


def refusal_under(
    adapter: ModelAdapter,
    chat: ChatFormat,
    prompts: Sequence[Prompt],
    interventions: Sequence[Intervention],
    refusal_ids: Sequence[int],
    judge: SubstringJudge,
    *,
    tokens: int,
    batch_size: int,
    label: str,
) -> Refusal:
    odds = first_position(adapter, chat, prompts, interventions).refusal_log_odds(refusal_ids)
    with applied(adapter, *interventions):
        completions = generate(
            adapter, chat, prompts, max_new_tokens=tokens, batch_size=batch_size,
            description=f"geometry: {label}",
        )  # fmt: skip
    return Refusal(odds, [judge.is_refusal(c.text) for c in completions])
