"""Batched greedy generation with interventions active on prompt and generated tokens."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from refusalkit.activations import encode_batches
from refusalkit.interventions import Intervention, applied
from refusalkit.models.adapter import ModelAdapter
from refusalkit.progress import track
from refusalkit.prompts.chat import ChatFormat
from refusalkit.prompts.datasets import Prompt


@dataclass(frozen=True)
class Completion:
    text: str
    token_ids: tuple[int, ...]  # generated ids up to and including the first stop token


def generate(
    adapter: ModelAdapter,
    chat: ChatFormat,
    prompts: Sequence[Prompt],
    *,
    intervention: Intervention | None = None,
    max_new_tokens: int = 64,
    batch_size: int = 32,
    description: str = "generating",
) -> list[Completion]:
    """Greedy completions in the order of ``prompts`` (batches are length-sorted internally)."""
    tokenizer = adapter.tokenizer
    completions: list[Completion] = [Completion("", ())] * len(prompts)
    batches = encode_batches(chat, prompts, batch_size, adapter.device)
    stop_ids = stop_token_ids(adapter, chat)
    model: Any = adapter.model  # a transformers causal LM: nn.Module does not declare generate
    with applied(adapter, intervention), torch.inference_mode():
        for batch in track(batches, description):
            output = model.generate(
                input_ids=batch.input_ids,
                attention_mask=batch.attention_mask,
                max_new_tokens=max_new_tokens,
                do_sample=False,
                temperature=None,
                top_p=None,
                top_k=None,
                pad_token_id=tokenizer.pad_token_id,
                eos_token_id=sorted(stop_ids),
            )
            new_tokens = output[:, batch.input_ids.shape[1] :].tolist()
            for row, tokens in zip(batch.order, new_tokens, strict=True):
                kept = _through_first_stop(tokens, stop_ids)
                text = tokenizer.decode(kept, skip_special_tokens=True).strip()
                completions[row] = Completion(text, tuple(kept))
    return completions


def stop_token_ids(adapter: ModelAdapter, chat: ChatFormat) -> set[int]:
    """Where a reply ends: the tokenizer's EOS, the model's generation-config EOS ids, and the
    template's end-of-turn token — the first post-instruction token *if it is a special token*
    (``<|im_end|>``, ``<|eot_id|>``, ``<end_of_turn>``). A plain-text suffix (``… [/INST]``
    templates) starts with an ordinary token such as ``▁[``, which a reply may well contain."""
    tokenizer = adapter.tokenizer
    stops = {tokenizer.eos_token_id}
    configured = getattr(getattr(adapter.model, "generation_config", None), "eos_token_id", None)
    stops |= set(configured) if isinstance(configured, list | tuple) else {configured}
    if chat.suffix_ids and chat.suffix_ids[0] in set(tokenizer.all_special_ids):
        stops.add(chat.suffix_ids[0])
    return {int(token) for token in stops if token is not None}


def _through_first_stop(tokens: list[int], stop_ids: set[int]) -> list[int]:
    """Finished rows are padded after their stop token; keep the stop token (the model's own
    decision to end, which the coherence cross-entropy scores) and drop the padding."""
    for index, token in enumerate(tokens):
        if token in stop_ids:
            return tokens[: index + 1]
    return tokens
