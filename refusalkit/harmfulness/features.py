"""What SPEC §8 reads from the model: every prompt's block inputs at ``t_inst`` (the instruction's
last token) and ``t_post-inst`` (the last prompt token) at every layer, their mean over the
instruction's tokens (the guard's other reading), and its refusal log-odds at the first response
position — one forward per batch, no generation.

Why a mean over the instruction: on the default model the block inputs at ``t_inst`` carry a few
huge coordinates from layer 6 on, and the built-in classes differ in that one token (mostly "."
against "?"); a guard reading ``t_inst`` classified even its own train prompts near chance at
layers 6-19 and flagged every prompt of two other-style sets (README, "Harmfulness is not
refusal"). The mean over the instruction's tokens reads the whole request."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from refusalkit.activations import encode_batches, forward
from refusalkit.config.modes import GUARD_READINGS
from refusalkit.errors import RefusalkitError
from refusalkit.models.adapter import ModelAdapter
from refusalkit.progress import track
from refusalkit.prompts.chat import ChatFormat
from refusalkit.prompts.datasets import Prompt
from refusalkit.selection.refusal_score import refusal_log_odds, refusal_tokens


@dataclass
class PromptFeatures:
    inst: torch.Tensor  # [N, L, d] float32: block inputs at t_inst
    post: torch.Tensor  # [N, L, d] float32: block inputs at t_post-inst (position -1)
    instruction_mean: torch.Tensor  # [N, L, d] float32: block inputs averaged over the instruction
    refusal_log_odds: torch.Tensor  # [N] float64, first response position, unmodified model
    instruction_tokens: torch.Tensor  # [N] int64: how many tokens the instruction spans
    seconds_per_prompt: float  # wall time of these forwards per prompt (latency, not a benchmark)

    def __len__(self) -> int:
        return int(self.inst.shape[0])

    def reading(self, name: str) -> torch.Tensor:
        """The guard's input: ``t_inst`` (the paper's) or ``instruction_mean``."""
        return self.inst if check_reading(name) == "t_inst" else self.instruction_mean

    def select(self, rows: Sequence[int]) -> PromptFeatures:
        """These prompts' rows only (the same measured latency)."""
        index = list(rows)
        return PromptFeatures(
            self.inst[index], self.post[index], self.instruction_mean[index],
            self.refusal_log_odds[index], self.instruction_tokens[index], self.seconds_per_prompt,
        )  # fmt: skip


def check_reading(name: str) -> str:
    if name not in GUARD_READINGS:
        raise RefusalkitError(f"unknown guard reading {name!r}: one of {', '.join(GUARD_READINGS)}")
    return name


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


class InstructionBounds:
    """Where an instruction's tokens lie in a prompt encoded by ``chat``: after the template's
    head (the tokens every instruction shares) and before the post-instruction suffix. The head's
    end is where the prompt parts from two reference instructions that share no first token; the
    smaller of the two common prefixes, so an instruction that begins like one reference still
    starts at the head's end."""

    _REFERENCES = ("Zebra", "1 2 3")

    def __init__(self, chat: ChatFormat) -> None:
        self._n_post = chat.n_post_instruction
        self._heads = [chat.encode(r)[: -self._n_post] for r in self._REFERENCES]

    def __call__(self, ids: Sequence[int]) -> tuple[int, int]:
        """``[start, end)`` of the instruction in ``ids`` (at least one token)."""
        end = len(ids) - self._n_post
        start = min(common_prefix(ids[:end], head) for head in self._heads)
        return min(start, end - 1), end


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
    bounds = InstructionBounds(chat)
    inst: dict[int, torch.Tensor] = {}
    post: dict[int, torch.Tensor] = {}
    mean: dict[int, torch.Tensor] = {}
    odds: dict[int, float] = {}
    counts: dict[int, int] = {}
    started = time.perf_counter()
    for batch in track(encode_batches(chat, prompts, batch_size, adapter.device), description):
        out = forward(adapter, batch, read_layers=layers, positions=None, logits=True)
        # Rows are left-padded: a prompt of n tokens fills the last n columns. One weight row per
        # prompt, 1/len over its instruction's columns, turns each layer's [B, T, d] reading into
        # the instruction means without copying the whole sequence.
        width = batch.input_ids.shape[1]
        weights = torch.zeros(len(batch.order), width, dtype=torch.float32)
        t_inst = torch.zeros(len(batch.order), dtype=torch.long)
        n_tokens = []
        for row, length in enumerate(batch.attention_mask.sum(-1).tolist()):
            offset = width - length
            start, end = bounds(batch.input_ids[row, offset:].tolist())
            weights[row, offset + start : offset + end] = 1.0 / (end - start)
            t_inst[row] = offset + end - 1
            n_tokens.append(end - start)
        rows = torch.arange(len(batch.order))
        readings = [out.readings[l].float().cpu() for l in layers]
        inst_batch = torch.stack([r[rows, t_inst] for r in readings], dim=1)  # [B, L, d]
        post_batch = torch.stack([r[:, -1] for r in readings], dim=1)
        mean_batch = torch.stack([torch.einsum("bt,btd->bd", weights, r) for r in readings], 1)
        assert out.last_logits is not None
        scores = refusal_log_odds(out.last_logits, ids).tolist()
        for row, index in enumerate(batch.order):
            inst[index], post[index] = inst_batch[row], post_batch[row]
            mean[index], odds[index] = mean_batch[row], scores[row]
            counts[index] = n_tokens[row]
    seconds = (time.perf_counter() - started) / max(1, len(prompts))
    order = range(len(prompts))
    return PromptFeatures(
        torch.stack([inst[i] for i in order]),
        torch.stack([post[i] for i in order]),
        torch.stack([mean[i] for i in order]),
        torch.tensor([odds[i] for i in order], dtype=torch.float64),
        torch.tensor([counts[i] for i in order], dtype=torch.long),
        seconds,
    )
