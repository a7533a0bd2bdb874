"""Teacher-forced scoring of responses: what the model's logits say, not what its text says.

One forward over ``prompt + response`` gives, per prompt, the log-probabilities at the first
response position (refusal-token log-odds, KL between conditions) and the negative log-likelihood
of the response tokens (the coherence cross-entropy). Causal attention makes the first-position
distribution independent of the response, so an empty response scores the prompt alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from refusalkit.activations import call_model, pad_left
from refusalkit.errors import RefusalkitError
from refusalkit.interventions import Intervention, applied
from refusalkit.models.adapter import ModelAdapter
from refusalkit.progress import track
from refusalkit.prompts.chat import ChatFormat
from refusalkit.prompts.datasets import Prompt
from refusalkit.selection.refusal_score import refusal_log_odds

# Scoring keeps full-vocabulary logits for every response position of a batch (batch × tokens ×
# vocabulary floats: about 240 MB for 8 × 49 × 152k); smaller batches than generation bound that.
SCORING_BATCH_SIZE = 8
PROMPT_BATCH_SIZE = 32


@dataclass
class ResponseScores:
    first_log_probs: torch.Tensor  # [N, V] float32: log-softmax at the first response position
    nll: torch.Tensor  # [N] float64: summed −log p of the response tokens
    n_tokens: torch.Tensor  # [N] long

    def refusal_log_odds(self, token_ids: Sequence[int]) -> list[float]:
        return refusal_log_odds(self.first_log_probs, token_ids).tolist()

    def cross_entropy(self) -> float:
        """Mean −log p per response token, over all responses."""
        return float(self.nll.sum() / self.n_tokens.sum().clamp_min(1))


def teacher_forced(
    adapter: ModelAdapter,
    chat: ChatFormat,
    prompts: Sequence[Prompt],
    responses: Sequence[Sequence[int]],
    *,
    intervention: Intervention | None = None,
    description: str = "scoring",
) -> ResponseScores:
    """Score ``responses`` (token ids; empty for the prompt alone) after their prompts."""
    encoded = [chat.encode(p.text) for p in prompts]
    order = sorted(range(len(prompts)), key=lambda i: (len(encoded[i]) + len(responses[i]), i))
    first: torch.Tensor | None = None
    nll = torch.zeros(len(prompts), dtype=torch.float64)
    n_tokens = torch.tensor([len(r) for r in responses], dtype=torch.long)
    # Prompt-only scoring keeps one position of logits per row, so it can batch like generation.
    size = SCORING_BATCH_SIZE if any(responses) else PROMPT_BATCH_SIZE
    chunks = [order[i : i + size] for i in range(0, len(order), size)]
    with applied(adapter, intervention), torch.inference_mode():
        for rows in track(chunks, description):
            batch = pad_left(
                [encoded[i] + list(responses[i]) for i in rows],
                adapter.tokenizer.pad_token_id,
                adapter.device,
            )
            keep = max(len(responses[i]) for i in rows) + 1
            logits = call_model(adapter.model, batch, keep).logits[:, -keep:, :]
            log_probs = torch.log_softmax(logits.float(), dim=-1).cpu()
            if first is None:
                first = torch.empty(len(prompts), log_probs.shape[-1])
            for slot, row in enumerate(rows):
                # Sequences are right-aligned: the last prompt token sits ``len(response)`` places
                # before the end and predicts the first response token.
                length = len(responses[row])
                start = keep - 1 - length
                first[row] = log_probs[slot, start]
                if length:
                    targets = torch.tensor(list(responses[row]), dtype=torch.long)
                    picked = log_probs[slot, start : start + length].gather(1, targets[:, None])
                    nll[row] = -picked.double().sum()
    if first is None:
        raise RefusalkitError("no prompts to score")
    return ResponseScores(first, nll, n_tokens)


def first_position_kl(clean: ResponseScores, changed: ResponseScores) -> torch.Tensor:
    """Per prompt KL(p_clean ‖ p_changed) at the first response position (SPEC §3's KL)."""
    p = clean.first_log_probs.double()
    q = changed.first_log_probs.double()
    return (p.exp() * (p - q)).sum(-1)
