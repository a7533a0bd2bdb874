"""What SPEC §9 reads from the model: per-category means at one position, and refusal under an
ablation — the first-position refusal log-odds (continuous, one forward per prompt), the judged
refusal of short greedy completions, and the first-position KL on harmless prompts."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from refusalkit.activations import encode_batches, forward
from refusalkit.evaluation.generation import generate
from refusalkit.evaluation.judges import SubstringJudge
from refusalkit.interventions import DirectionalAblation, Intervention, applied
from refusalkit.models.adapter import ModelAdapter
from refusalkit.progress import track
from refusalkit.prompts.chat import ChatFormat
from refusalkit.prompts.datasets import Prompt
from refusalkit.selection.refusal_score import refusal_log_odds


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


def first_log_probs(
    adapter: ModelAdapter,
    chat: ChatFormat,
    prompts: Sequence[Prompt],
    interventions: Sequence[Intervention],
    batch_size: int,
) -> torch.Tensor:
    """Next-token log-probs at the last prompt position, ``[N, V]`` float32, in prompt order."""
    rows: dict[int, torch.Tensor] = {}
    with applied(adapter, *interventions):
        for batch in encode_batches(chat, prompts, batch_size, adapter.device):
            logits = forward(adapter, batch, logits=True).last_logits
            assert logits is not None
            for row, index in enumerate(batch.order):
                rows[index] = torch.log_softmax(logits[row], dim=-1).cpu()
    return torch.stack([rows[i] for i in range(len(prompts))])


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
    log_probs = first_log_probs(adapter, chat, prompts, interventions, batch_size)
    odds = refusal_log_odds(log_probs, refusal_ids).tolist()
    with applied(adapter, *interventions):
        completions = generate(
            adapter, chat, prompts, max_new_tokens=tokens, batch_size=batch_size,
            description=f"geometry: {label}",
        )  # fmt: skip
    return Refusal(odds, [judge.is_refusal(c.text) for c in completions])


def mean_kl(clean: torch.Tensor, changed: torch.Tensor) -> float:
    """Mean over prompts of KL(p_clean ‖ p_changed) from ``[N, V]`` log-probs."""
    return float((clean.double().exp() * (clean.double() - changed.double())).sum(-1).mean())
