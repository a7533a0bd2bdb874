"""Chat formatting, token positions and prompt datasets."""

from refusalkit.prompts.chat import ChatFormat, SystemPrompt, build_chat_format
from refusalkit.prompts.datasets import (
    Prompt,
    PromptSource,
    Splits,
    builtin_prompts,
    load_prompts,
    split_manifest,
    split_prompts,
)

__all__ = [
    "ChatFormat",
    "Prompt",
    "PromptSource",
    "Splits",
    "SystemPrompt",
    "build_chat_format",
    "builtin_prompts",
    "load_prompts",
    "split_manifest",
    "split_prompts",
]
