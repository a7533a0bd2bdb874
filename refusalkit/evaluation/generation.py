"""Batched greedy generation with interventions active on prompt and generated tokens."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from refusalkit.activations import encode_batches
from refusalkit.interventions import Intervention, applied
from refusalkit.models.adapter import ModelAdapter
from refusalkit.progress import track
from refusalkit.prompts.chat import ChatFormat
from refusalkit.prompts.datasets import Prompt


def generate(
    adapter: ModelAdapter,
    chat: ChatFormat,
    prompts: Sequence[Prompt],
    *,
    intervention: Intervention | None = None,
    max_new_tokens: int = 64,
    batch_size: int = 32,
    description: str = "generating",
) -> list[str]:
    """Greedy completions in the order of ``prompts`` (batches are length-sorted internally)."""
    tokenizer = adapter.tokenizer
    completions: list[str] = [""] * len(prompts)
    batches = encode_batches(chat, prompts, batch_size, adapter.device)
    stop_ids = {tokenizer.eos_token_id, *chat.suffix_ids[:1]} - {None}
    with applied(adapter, intervention), torch.inference_mode():
        for batch in track(batches, description):
            output = adapter.model.generate(
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
            new_tokens = output[:, batch.input_ids.shape[1] :]
            texts = tokenizer.batch_decode(new_tokens, skip_special_tokens=True)
            for row, text in zip(batch.order, texts, strict=True):
                completions[row] = text.strip()
    return completions
