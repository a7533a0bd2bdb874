"""Token budgets: every prompt, with its chat template and the generation budget, must fit the
model's context. A prompt that does not fit would be truncated, crash the attention, or stall a
generation for minutes with no message; it is refused before anything runs, with its file and
line."""

from __future__ import annotations

from collections.abc import Iterable

from refusalkit.errors import RefusalkitError
from refusalkit.prompts.chat import ChatFormat
from refusalkit.prompts.datasets import Prompt


def check_token_budget(
    chat: ChatFormat, prompts: Iterable[Prompt], context: int | None, max_new_tokens: int
) -> int:
    """Raise if ``max_new_tokens`` or any prompt (template included) plus ``max_new_tokens``
    exceeds ``context``; return the longest prompt's token count. ``context`` None (the model
    config names none) checks nothing but counts."""
    if context is not None and max_new_tokens >= context:
        raise RefusalkitError(
            f"--max-new-tokens {max_new_tokens} does not fit the model's context of {context} "
            "tokens with any prompt; lower it (48 is the default)"
        )
    longest = 0
    for prompt in prompts:
        length = len(chat.encode(prompt.text))
        longest = max(longest, length)
        if context is not None and length + max_new_tokens > context:
            where = prompt.origin or "a built-in prompt"
            raise RefusalkitError(
                f"{where}: the prompt is {length} tokens with its chat template; with "
                f"--max-new-tokens {max_new_tokens} that exceeds the model's context of {context} "
                "tokens — shorten or remove it"
            )
    return longest
