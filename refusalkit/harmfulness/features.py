"""What SPEC §8 reads from the model: every prompt's block inputs at ``t_inst`` (the instruction's
last token) and ``t_post-inst`` (the last prompt token) at every layer, and its refusal log-odds at
the first response position — one forward per batch, no generation."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from refusalkit.activations import encode_batches, forward
from refusalkit.models.adapter import ModelAdapter
from refusalkit.progress import track
from refusalkit.prompts.chat import ChatFormat
from refusalkit.prompts.datasets import Prompt
from refusalkit.selection.refusal_score import refusal_log_odds, refusal_tokens


@dataclass
class PromptFeatures:
    inst: torch.Tensor  # [N, L, d] float32: block inputs at t_inst
    post: torch.Tensor  # [N, L, d] float32: block inputs at t_post-inst (position -1)
    refusal_log_odds: torch.Tensor  # [N] float64, first response position, unmodified model
    seconds_per_prompt: float  # wall time of these forwards per prompt (latency, not a benchmark)

    def __len__(self) -> int:
        return int(self.inst.shape[0])


def read_features(
    adapter: ModelAdapter,
    chat: ChatFormat,
    prompts: Sequence[Prompt],
    batch_size: int,
    description: str,
    refusal_ids: Sequence[int] | None = None,
) -> PromptFeatures:
    """Rows in the order of ``prompts``; ``refusal_ids`` default to the tokenizer's refusal
    tokens (SPEC §4)."""
    ids = refusal_ids if refusal_ids is not None else refusal_tokens(adapter.tokenizer).ids
    layers = list(range(adapter.n_layers))
    positions = [chat.t_inst_position, -1]
    inst: dict[int, torch.Tensor] = {}
    post: dict[int, torch.Tensor] = {}
    odds: dict[int, float] = {}
    started = time.perf_counter()
    for batch in track(encode_batches(chat, prompts, batch_size, adapter.device), description):
        out = forward(adapter, batch, read_layers=layers, positions=positions, logits=True)
        stacked = torch.stack([out.readings[l].cpu() for l in layers], dim=2)  # [B, 2, L, d]
        assert out.last_logits is not None
        scores = refusal_log_odds(out.last_logits, ids).tolist()
        for row, index in enumerate(batch.order):
            inst[index], post[index], odds[index] = stacked[row, 0], stacked[row, 1], scores[row]
    seconds = (time.perf_counter() - started) / max(1, len(prompts))
    order = range(len(prompts))
    return PromptFeatures(
        torch.stack([inst[i] for i in order]),
        torch.stack([post[i] for i in order]),
        torch.tensor([odds[i] for i in order], dtype=torch.float64),
        seconds,
    )
