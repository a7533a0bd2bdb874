"""``refusalkit chat``: talk to the model with the run's direction switched on and off.

A terminal chat through the model's own chat template, history kept, replies streamed token by
token, and the intervention switchable between turns:

    /ablate        directional ablation (the refusal direction removed everywhere)
    /add A         activation addition of A·r at the direction's layer
    /ace A         affine concept editing to α = A at the direction's layer (0: refusal removed)
    /off           the unmodified model
    /compare       the last message again, unmodified and with the current intervention
    /reset         forget the history      /help        these lines      /quit (or Ctrl-D)

``--prompt TEXT`` prints one reply and exits (no history, no commands).
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, TextIO

import torch

from refusalkit.api import Direction
from refusalkit.errors import RefusalkitError
from refusalkit.evaluation.generation import stop_token_ids
from refusalkit.interventions import Intervention, applied
from refusalkit.models.adapter import ModelAdapter
from refusalkit.prompts.chat import ChatFormat

HELP = __doc__.split("\n\n")[2] if __doc__ else ""


@dataclass
class ChatState:
    mode: str = "ablate"  # off | ablate | add | ace
    alpha: float = 1.0
    history: list[dict[str, str]] = field(default_factory=list)

    def describe(self) -> str:
        return self.mode if self.mode in ("off", "ablate") else f"{self.mode} {self.alpha:g}"


def intervention_for(direction: Direction, state: ChatState) -> Intervention | None:
    if state.mode == "off":
        return None
    if state.mode == "ablate":
        return direction.ablation()
    if direction.layer is None:
        raise RefusalkitError(
            f"/{state.mode} needs the direction's layer: load it from a run directory"
        )
    if state.mode == "add":
        return direction.addition(state.alpha)
    if direction.harmless_mean is None:
        raise RefusalkitError("/ace needs the harmless mean μ⁻, which this direction file lacks")
    return direction.affine_edit(state.alpha)


class _Printer:
    """A transformers streamer that writes each new piece of text as soon as it decodes."""

    def __init__(self, tokenizer: Any, out: TextIO, stop_ids: set[int]) -> None:
        self.tokenizer, self.out, self.stop_ids = tokenizer, out, stop_ids
        self.tokens: list[int] = []
        self.shown = 0
        self.prompt_seen = False

    def put(self, value: torch.Tensor) -> None:
        if not self.prompt_seen:  # the first call carries the prompt
            self.prompt_seen = True
            return
        self.tokens += [t for t in value.flatten().tolist() if t not in self.stop_ids]
        text = self.tokenizer.decode(self.tokens, skip_special_tokens=True)
        if not text.endswith("\ufffd"):  # wait for the rest of a multi-byte character
            self.out.write(text[self.shown :])
            self.out.flush()
            self.shown = len(text)

    def end(self) -> None:
        self.out.write("\n")
        self.out.flush()

    @property
    def text(self) -> str:
        return str(self.tokenizer.decode(self.tokens, skip_special_tokens=True)).strip()


def reply(
    adapter: ModelAdapter,
    chat: ChatFormat,
    messages: list[dict[str, str]],
    intervention: Intervention | None,
    out: TextIO,
    max_new_tokens: int,
) -> str:
    """One greedy reply to ``messages``, streamed to ``out``; returns its text."""
    tokenizer = adapter.tokenizer
    system = chat.system.text if chat.system.mode == "text" else None
    conversation = list(messages)
    if system and chat.system_role:
        conversation = [{"role": "system", "content": system}, *conversation]
    elif system:  # templates without a system turn: prepended to the first user message
        first = conversation[0]
        conversation[0] = {**first, "content": f"{system}\n\n{first['content']}"}
    ids = tokenizer.apply_chat_template(
        conversation, add_generation_prompt=True, return_tensors="pt", **chat.template_kwargs
    )
    ids = ids if isinstance(ids, torch.Tensor) else ids["input_ids"]
    stop_ids = stop_token_ids(adapter, chat)
    printer = _Printer(tokenizer, out, stop_ids)
    model: Any = adapter.model
    with applied(adapter, intervention), torch.inference_mode():
        model.generate(
            input_ids=ids.to(adapter.device),
            attention_mask=torch.ones_like(ids).to(adapter.device),
            max_new_tokens=max_new_tokens, do_sample=False, temperature=None, top_p=None,
            top_k=None, pad_token_id=tokenizer.pad_token_id, eos_token_id=sorted(stop_ids),
            streamer=printer,
        )  # fmt: skip
    return printer.text


def _command(line: str, state: ChatState, out: TextIO) -> str | None:
    """Apply a ``/command``; returns "quit", "compare" or None."""
    name, _, argument = line[1:].partition(" ")
    if name in ("quit", "exit"):
        return "quit"
    if name == "help":
        out.write(HELP + "\n")
    elif name == "reset":
        state.history.clear()
        out.write("(history cleared)\n")
    elif name in ("off", "ablate"):
        state.mode = name
        out.write(f"(intervention: {state.describe()})\n")
    elif name in ("add", "ace"):
        try:
            state.alpha = float(argument) if argument.strip() else (1.0 if name == "add" else 0.0)
        except ValueError:
            out.write(f"(/{name} takes a number, e.g. /{name} 1.5)\n")
            return None
        state.mode = name
        out.write(f"(intervention: {state.describe()})\n")
    elif name == "compare":
        return "compare"
    else:
        out.write(f"(unknown command /{name}: /help lists them)\n")
    return None


def chat_loop(
    adapter: ModelAdapter,
    chat: ChatFormat,
    direction: Direction,
    lines: Iterable[str],
    out: TextIO,
    *,
    state: ChatState | None = None,
    max_new_tokens: int = 256,
    interactive: bool = False,
) -> ChatState:
    """The conversation over ``lines`` (stdin, or a list in tests)."""
    state = state or ChatState()
    if interactive:
        out.write(f"(intervention: {state.describe()}; /help for commands)\n")
    last: str | None = None
    iterator = iter(lines)
    while True:
        if interactive:
            out.write("> ")
            out.flush()
        try:
            line = next(iterator).strip()
        except (StopIteration, EOFError, KeyboardInterrupt):
            out.write("\n")
            return state
        if not line:
            continue
        if line.startswith("/"):
            action = _command(line, state, out)
            if action == "quit":
                return state
            if action == "compare":
                if last is None:
                    out.write("(nothing to compare yet)\n")
                    continue
                history = state.history[:-2]
                for label, mode in (("off", ChatState("off")), (state.describe(), state)):
                    out.write(f"[{label}] ")
                    reply(adapter, chat, [*history, {"role": "user", "content": last}],
                          intervention_for(direction, mode), out, max_new_tokens)  # fmt: skip
            continue
        last = line
        messages = [*state.history, {"role": "user", "content": line}]
        try:
            text = reply(adapter, chat, messages, intervention_for(direction, state), out,
                         max_new_tokens)  # fmt: skip
        except KeyboardInterrupt:
            out.write("\n(interrupted)\n")
            continue
        state.history = [*messages, {"role": "assistant", "content": text}]


def stdin_lines() -> Iterable[str]:
    while True:
        yield input() if sys.stdin.isatty() else sys.stdin.readline() or _eof()


def _eof() -> str:
    raise EOFError
