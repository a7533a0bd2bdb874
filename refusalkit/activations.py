"""Batched forwards that read the residual stream (block inputs) at chosen layers and positions.

Only what is asked for is computed and kept: readings are sliced to the requested positions inside
the hook (no stack of every layer's hidden states), a forward that needs no logits stops right after
its last reading, a forward that needs logits computes them at the last position only, and a forward
can start at block ``l`` from cached clean block inputs when everything before ``l`` is unchanged.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from refusalkit.errors import RefusalkitError
from refusalkit.models.adapter import ModelAdapter
from refusalkit.prompts.chat import ChatFormat, SystemPrompt
from refusalkit.prompts.datasets import Prompt


@dataclass
class EncodedBatch:
    input_ids: torch.Tensor  # [B, T], left padded
    attention_mask: torch.Tensor  # [B, T]
    position_ids: torch.Tensor  # [B, T]: 0.. over real tokens, so padding never shifts positions
    order: list[int]  # index of each row in the original prompt list

    @property
    def size(self) -> int:
        return int(self.input_ids.shape[0])


def pad_left(sequences: Sequence[Sequence[int]], pad_id: int, device: torch.device) -> EncodedBatch:
    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, seq in enumerate(sequences):
        ids[row, width - len(seq) :] = torch.tensor(list(seq), dtype=torch.long)
        mask[row, width - len(seq) :] = 1
    positions = (mask.cumsum(-1) - 1).clamp_min(0)
    return EncodedBatch(ids.to(device), mask.to(device), positions.to(device), [])


def encode_batches(
    chat: ChatFormat,
    prompts: Sequence[Prompt],
    batch_size: int,
    device: torch.device,
    system: SystemPrompt | None = None,
) -> list[EncodedBatch]:
    """Encode and left-pad prompts in length-sorted batches (less padding, same results)."""
    encoded = [chat.encode(p.text, system) for p in prompts]
    by_length = sorted(range(len(encoded)), key=lambda i: (len(encoded[i]), i))
    pad_id = chat.tokenizer.pad_token_id
    batches = []
    for start in range(0, len(by_length), batch_size):
        rows = by_length[start : start + batch_size]
        batch = pad_left([encoded[i] for i in rows], pad_id, device)
        batch.order = rows
        batches.append(batch)
    return batches


class _StopForward(Exception):
    """Raised from a hook once every reading is taken, to skip the rest of the network."""


class _SkippedBlock(nn.Module):
    """Stands in for a decoder block whose output is replaced anyway: returns its input unchanged
    in the block's own return convention, and forwards attribute reads (e.g. ``attention_type``)
    to the real block."""

    def __init__(self, block: nn.Module, returns_tuple: bool) -> None:
        super().__init__()
        object.__setattr__(self, "_block", block)
        self._returns_tuple = returns_tuple

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(object.__getattribute__(self, "_block"), name)

    def forward(self, hidden_states: torch.Tensor | None = None, *_: Any, **kwargs: Any) -> Any:
        if hidden_states is None:
            hidden_states = kwargs["hidden_states"]
        return (hidden_states,) if self._returns_tuple else hidden_states


@dataclass
class ForwardOutput:
    readings: dict[int, torch.Tensor]  # layer -> [B, len(positions), d] float32 (or full sequence)
    last_logits: torch.Tensor | None  # [B, V] float32


@contextmanager
def _skip_blocks_before(adapter: ModelAdapter, start_layer: int) -> Iterator[None]:
    if start_layer <= 0:
        yield
        return
    returns_tuple = adapter.block_returns_tuple
    originals = [adapter.layers[i] for i in range(start_layer)]
    try:
        for i, block in enumerate(originals):
            adapter.layers[i] = _SkippedBlock(block, returns_tuple)
        yield
    finally:
        for i, block in enumerate(originals):
            adapter.layers[i] = block


def _hidden_of(args: tuple[Any, ...], kwargs: dict[str, Any]) -> torch.Tensor:
    return args[0] if args else kwargs["hidden_states"]


def call_model(model: nn.Module, batch: EncodedBatch, logits_to_keep: int = 1) -> Any:
    """The model's forward on a left-padded batch, with logits for the last ``logits_to_keep``
    positions (all positions for model classes that do not support it)."""
    inputs = {
        "input_ids": batch.input_ids,
        "attention_mask": batch.attention_mask,
        "position_ids": batch.position_ids,
        "use_cache": False,
    }
    try:
        # Logits at the last position only: the full-vocabulary projection of every position
        # costs as much as several decoder blocks and is never needed here.
        return model(**inputs, logits_to_keep=logits_to_keep)
    except TypeError as error:  # older or custom model classes without logits_to_keep
        if "logits_to_keep" not in str(error):
            raise
        return model(**inputs)


def forward(
    adapter: ModelAdapter,
    batch: EncodedBatch,
    *,
    read_layers: Sequence[int] = (),
    positions: Sequence[int] | None = (-1,),
    logits: bool = False,
    start_layer: int = 0,
    start_states: torch.Tensor | None = None,
) -> ForwardOutput:
    """One forward over ``batch`` under whatever interventions are active.

    ``positions=None`` keeps the full sequence. With ``start_states`` (the clean input of block
    ``start_layer`` for this batch) blocks before ``start_layer`` are skipped; this is exact when
    no active intervention touches them.
    """
    readings: dict[int, torch.Tensor] = {}
    handles = []
    stop_layer = max(read_layers) if read_layers and not logits else None
    index = (
        None if positions is None else torch.tensor(list(positions), device=batch.input_ids.device)
    )

    if start_states is not None:

        def inject(_m: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
            if args:
                return (start_states, *args[1:]), kwargs
            return args, {**kwargs, "hidden_states": start_states}

        handles.append(
            adapter.layers[start_layer].register_forward_pre_hook(
                inject, with_kwargs=True, prepend=True
            )
        )

    def reader(layer: int) -> Any:
        def hook(_m: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
            hidden = _hidden_of(args, kwargs)
            taken = hidden if index is None else hidden[:, index]
            readings[layer] = taken.float()
            if layer == stop_layer:
                raise _StopForward

        return hook

    for layer in sorted(set(read_layers)):
        handles.append(
            adapter.layers[layer].register_forward_pre_hook(reader(layer), with_kwargs=True)
        )
    last_logits = None
    try:
        with (
            torch.inference_mode(),
            _skip_blocks_before(adapter, start_layer if start_states is not None else 0),
        ):
            try:
                output = call_model(adapter.model, batch)
                if logits:
                    last_logits = output.logits[:, -1, :].float()
            except _StopForward:
                pass
    finally:
        for handle in handles:
            handle.remove()
    for layer, value in readings.items():
        if not torch.isfinite(value).all():
            raise RefusalkitError(
                f"non-finite activations (NaN/inf) at the input of layer {layer}; "
                "try --dtype float32 "
                "or a smaller intervention strength"
            )
    return ForwardOutput(readings, last_logits)
