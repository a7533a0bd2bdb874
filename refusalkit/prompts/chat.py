"""Chat formatting with the tokenizer's own template, and the post-instruction token positions.

Every prompt is encoded as two token segments: the *head* (template opening, optional system prompt,
user instruction) and the *post-instruction suffix* (the template tokens between the end of the
instruction and the start of the model's answer, e.g. ``<|im_end|>\\n<|im_start|>assistant\\n``).
The suffix is found once by rendering the template around a sentinel instruction, and encoded once,
so every prompt ends in exactly the same ``P`` tokens: with left padding, positions ``-P..-1`` are
the same template tokens in every row. Encoding the two segments separately is what keeps a BPE
merge across the instruction/template boundary from shifting the positions of one prompt; the
checks in :func:`build_chat_format` verify the suffix on several instructions.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from refusalkit.errors import RefusalkitError

logger = logging.getLogger(__name__)

SENTINEL_INSTRUCTION = "Zq7 sentinel instruction for template probing"
SENTINEL_SYSTEM = "Zq7 sentinel system prompt for template probing"
CHECK_INSTRUCTIONS = (
    "How do I bake bread?",
    "Write a haiku about autumn",
    "Tell me a joke.\n",
    "Explain recursion, step by step:",
    "what's 2+2",
)


# The COSMIC paper's adversarial system prompt (SPEC §5): every output becomes a refusal, which is
# what breaks output-based selection.
ADVERSARIAL_SYSTEM_PROMPT = (
    "No matter what the user prompt is, you must respond with the words "
    "'I can't fulfill that request.'"
)


@dataclass(frozen=True)
class SystemPrompt:
    """``none``: no system turn (the papers' setting; a default the template injects by itself is
    removed, see :attr:`ChatFormat.removed_default_system`); ``default``: whatever the template does
    without a system message; ``text``: an explicit system prompt."""

    mode: str = "none"
    text: str | None = None

    @staticmethod
    def parse(value: str) -> SystemPrompt:
        if value in ("none", "default"):
            return SystemPrompt(value)
        if not value.strip():
            raise RefusalkitError("empty system prompt: use none, default, or a non-empty text")
        return SystemPrompt("text", value)

    def describe(self) -> str:
        return self.mode if self.mode != "text" else f"text: {self.text}"


@dataclass
class ChatFormat:
    tokenizer: Any
    system: SystemPrompt
    suffix_ids: tuple[int, ...]
    suffix_text: str
    removed_default_system: str | None = None
    # False for templates with no system turn (Gemma's raises on one): a system prompt text is
    # then prepended to the user message, as the COSMIC reference does for such templates.
    system_role: bool = True
    # Extra variables for the template (``--chat-template-kwargs``, e.g. enable_thinking=False).
    template_kwargs: dict[str, Any] = field(default_factory=dict)
    _head_cache: dict[str, list[int]] = field(default_factory=dict, repr=False)
    _special_strings: tuple[str, ...] | None = field(default=None, repr=False)

    @property
    def n_post_instruction(self) -> int:
        return len(self.suffix_ids)

    @property
    def t_inst_position(self) -> int:
        """Negative index of the last instruction token (just before the suffix)."""
        return -self.n_post_instruction - 1

    def render(self, instruction: str, system: SystemPrompt | None = None) -> str:
        return _render(
            self.tokenizer,
            instruction,
            system or self.system,
            self.removed_default_system,
            self.system_role,
            self.template_kwargs,
        )

    def head_text(self, instruction: str, system: SystemPrompt | None = None) -> str:
        rendered = self.render(instruction, system)
        if not rendered.endswith(self.suffix_text):
            raise RefusalkitError(
                "the chat template renders this instruction without the common post-instruction "
                f"suffix {self.suffix_text!r}; the template is not supported"
            )
        return rendered[: len(rendered) - len(self.suffix_text)]

    def encode(self, instruction: str, system: SystemPrompt | None = None) -> list[int]:
        """Token ids of the whole prompt: head tokens + the shared suffix tokens."""
        head = self.head_text(instruction, system)
        ids = self._head_cache.get(head)
        if ids is None:
            ids = self._encode_head(head, instruction)
            self._head_cache[head] = ids
        return ids + list(self.suffix_ids)

    def _encode_head(self, head: str, instruction: str) -> list[int]:
        """The head's tokens, with the instruction's own text kept literal: a prompt that contains
        a special-token string such as ``<|im_end|>`` must not close its turn and open a forged
        one (prompt injection into the template). Prompts without such strings are tokenized in
        one piece, exactly as before; the others in three pieces — template before, instruction
        with special tokens split into ordinary text, template after."""
        encode = functools.partial(self.tokenizer, add_special_tokens=False)
        if self._special_strings is None:
            self._special_strings = special_token_strings(self.tokenizer)
        found = [token for token in self._special_strings if token in instruction]
        if not found:
            return list(encode(head)["input_ids"])
        core = instruction.strip()
        start = head.rfind(core)
        if start < 0:
            raise RefusalkitError(
                f"a prompt contains the special token {found[0]!r} and the chat template changes "
                f"its text, so it cannot be kept literal: remove the token from the prompt "
                f"(prompt starts {instruction[:60]!r})"
            )
        end = start + len(core)
        before, after = head[:start], head[end:]
        return (
            (list(encode(before)["input_ids"]) if before else [])
            + list(encode(core, split_special_tokens=True)["input_ids"])
            + (list(encode(after)["input_ids"]) if after else [])
        )

    def position_labels(self) -> list[str]:
        """Human-readable tokens at positions -P..-1."""
        return [self.tokenizer.decode([token]) for token in self.suffix_ids]


def special_token_strings(tokenizer: Any) -> tuple[str, ...]:
    """The tokenizer's special tokens as text."""
    decoder = getattr(tokenizer, "added_tokens_decoder", {}) or {}
    specials = {token.content for token in decoder.values() if getattr(token, "special", False)}
    specials |= set(getattr(tokenizer, "all_special_tokens", []) or [])
    return tuple(sorted(t for t in specials if t))


def _apply(
    tokenizer: Any,
    messages: list[dict[str, str]],
    generation_prompt: bool = True,
    template_kwargs: dict[str, Any] | None = None,
) -> str:
    try:
        text = tokenizer.apply_chat_template(
            messages,
            tokenize=False,
            add_generation_prompt=generation_prompt,
            **(template_kwargs or {}),
        )
    except Exception as error:  # templates raise arbitrary jinja errors (e.g. no system role)
        raise RefusalkitError(f"the chat template rejected the messages: {error}") from error
    return str(text)


def _injected_system_block(tokenizer: Any, kwargs: dict[str, Any]) -> str | None:
    """The system block a template inserts when given no system message, or None.

    Found without family knowledge: the role opener is the generation prompt with the word
    'assistant' replaced by 'system'; the block runs from that opener to the end-of-turn text that
    closes a user turn.
    """
    user = [{"role": "user", "content": SENTINEL_INSTRUCTION}]
    user_only = _apply(tokenizer, user, template_kwargs=kwargs)
    no_generation = _apply(tokenizer, user, generation_prompt=False, template_kwargs=kwargs)
    generation_prompt = (
        user_only[len(no_generation) :] if user_only.startswith(no_generation) else ""
    )
    if "assistant" not in generation_prompt:
        return None
    system_opener = generation_prompt.replace("assistant", "system", 1)
    end = no_generation.find(SENTINEL_INSTRUCTION) + len(SENTINEL_INSTRUCTION)
    turn_close = no_generation[end:]
    start = user_only.find(system_opener)
    instruction_at = user_only.find(SENTINEL_INSTRUCTION)
    if not turn_close or start < 0 or start > instruction_at:
        return None
    close_at = user_only.find(turn_close, start)
    if close_at < 0 or close_at > instruction_at:
        return None
    return user_only[start : close_at + len(turn_close)]


def _has_system_role(tokenizer: Any, kwargs: dict[str, Any]) -> bool:
    """Whether the template renders a system turn (some raise on one, some drop it silently)."""
    messages = [
        {"role": "system", "content": SENTINEL_SYSTEM},
        {"role": "user", "content": SENTINEL_INSTRUCTION},
    ]
    try:
        return SENTINEL_SYSTEM in _apply(tokenizer, messages, template_kwargs=kwargs)
    except RefusalkitError:
        return False


def _render(
    tokenizer: Any,
    instruction: str,
    system: SystemPrompt,
    injected_block: str | None,
    system_role: bool = True,
    template_kwargs: dict[str, Any] | None = None,
) -> str:
    messages = [{"role": "user", "content": instruction}]
    if system.mode == "text" and system_role:
        messages.insert(0, {"role": "system", "content": str(system.text)})
    elif system.mode == "text":
        messages[0]["content"] = f"{system.text}\n\n{instruction}"
    text = _apply(tokenizer, messages, template_kwargs=template_kwargs)
    if system.mode == "none" and injected_block:
        text = text.replace(injected_block, "", 1)
    return text


def build_chat_format(
    tokenizer: Any,
    system: SystemPrompt | None = None,
    template_kwargs: dict[str, Any] | None = None,
) -> ChatFormat:
    """Probe the tokenizer's template and return a verified :class:`ChatFormat`;
    ``template_kwargs`` are passed to the template wherever a prompt is rendered."""
    system = system or SystemPrompt()
    kwargs = dict(template_kwargs or {})
    if not getattr(tokenizer, "chat_template", None):
        raise RefusalkitError(
            "the tokenizer has no chat template; refusal directions are defined on chat-formatted "
            "prompts — use an instruct/chat model or set tokenizer.chat_template"
        )
    injected = _injected_system_block(tokenizer, kwargs)
    system_role = _has_system_role(tokenizer, kwargs)
    rendered = _render(tokenizer, SENTINEL_INSTRUCTION, system, injected, system_role, kwargs)
    end = rendered.rfind(SENTINEL_INSTRUCTION)
    if end < 0:
        raise RefusalkitError("the chat template drops the user instruction; cannot find positions")
    suffix_text = rendered[end + len(SENTINEL_INSTRUCTION) :]
    if not suffix_text:
        raise RefusalkitError("the chat template adds nothing after the instruction (P = 0)")
    suffix_ids = tuple(tokenizer(suffix_text, add_special_tokens=False)["input_ids"])
    chat = ChatFormat(
        tokenizer=tokenizer,
        system=system,
        suffix_ids=suffix_ids,
        suffix_text=suffix_text,
        removed_default_system=injected if system.mode == "none" else None,
        system_role=system_role,
        template_kwargs=kwargs,
    )
    _check_suffix(chat, CHECK_INSTRUCTIONS)
    return chat


def _check_suffix(chat: ChatFormat, instructions: Sequence[str]) -> None:
    """The suffix must be what the template renders after any instruction. Where tokenizing the
    whole prompt in one go would merge tokens across the boundary, the two-segment encoding keeps
    the positions aligned; that is logged, since the model then sees a slightly different split."""
    for instruction in instructions:
        chat.head_text(instruction)  # raises if the suffix is not shared
        whole = chat.tokenizer(chat.render(instruction), add_special_tokens=False)["input_ids"]
        if tuple(whole[-chat.n_post_instruction :]) != chat.suffix_ids:
            logger.warning(
                "the template's suffix merges with the end of %r when tokenized whole; "
                "refusalkit encodes instruction and suffix separately to keep positions aligned",
                instruction,
            )
