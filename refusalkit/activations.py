"""Batched forwards that read the residual stream at chosen points and positions.

Residual point ``l`` is the input of block ``l`` (SPEC §0) for ``l < L``, and point ``L`` is the
decoder's output after the final norm: Hugging Face's ``hidden_states[l]`` for every ``l ≤ L``,
which is what the reference L_low convention reads (block ``l``'s output = point ``l + 1``).

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
from torch.utils.hooks import RemovableHandle

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


@dataclass
class Chunk:
    """Model inputs for several prompts, and where each prompt's last token sits.

    Readings ``hidden[:, columns]`` of a chunk, flattened row-major over (row, column), belong to
    the prompts ``order`` (indices into the prompt list). A padded chunk is an ``EncodedBatch``:
    one prompt per row, last token in the last column. A packed chunk is one row holding the token
    prefix every prompt shares once, then each prompt's remaining tokens, and a 4-D additive mask
    under which a token sees the shared prefix and the earlier tokens of its own prompt only.
    """

    inputs: EncodedBatch
    columns: list[int]
    order: list[int]

    @property
    def n_prompts(self) -> int:
        return len(self.order)

    @property
    def tokens(self) -> int:
        """Token positions one forward computes (padding included)."""
        return int(self.inputs.input_ids.numel())


def padded_chunks(batches: Sequence[EncodedBatch]) -> list[Chunk]:
    return [Chunk(b, [int(b.input_ids.shape[1]) - 1], list(b.order)) for b in batches]


def _real_tokens(batches: Sequence[EncodedBatch]) -> list[tuple[int, list[int]]]:
    """(prompt index, token ids without padding) for every row, in batch order."""
    prompts = []
    for batch in batches:
        for row, index in enumerate(batch.order):
            ids = batch.input_ids[row][batch.attention_mask[row].bool()]
            prompts.append((index, [int(t) for t in ids]))
    return prompts


def shared_prefix_length(sequences: Sequence[Sequence[int]]) -> int:
    """Length of the token prefix all sequences share, leaving each at least one own token (its
    last token is where it is read)."""
    shortest = min(len(s) for s in sequences)
    length = 0
    while length < shortest - 1 and all(s[length] == sequences[0][length] for s in sequences):
        length += 1
    return length


def _packed_mask(lengths: Sequence[int], prefix: int, dtype: torch.dtype) -> torch.Tensor:
    """``[1, 1, N, N]`` additive mask: causal, and a prompt's tokens see the shared prefix and
    their own tokens only. Every row sees at least itself, so no softmax row is empty."""
    own = torch.repeat_interleave(torch.arange(len(lengths)), torch.tensor(list(lengths)))
    owner = torch.cat([torch.full((prefix,), -1), own])  # -1: the shared prefix
    visible = (owner[:, None] == owner[None, :]) | (owner[None, :] == -1)
    visible &= torch.ones(len(owner), len(owner), dtype=torch.bool).tril()
    mask = torch.zeros(len(owner), len(owner), dtype=dtype)
    return mask.masked_fill(~visible, torch.finfo(dtype).min)[None, None]


def _pack(
    prompts: Sequence[tuple[int, list[int]]], prefix: int, dtype: torch.dtype, device: torch.device
) -> Chunk:
    shared = prompts[0][1][:prefix]
    rests = [ids[prefix:] for _, ids in prompts]
    ids = shared + [t for rest in rests for t in rest]
    # Position ids as in the padded layout: each prompt continues after the shared prefix.
    positions = list(range(prefix))
    for rest in rests:
        positions += range(prefix, prefix + len(rest))
    ends = torch.tensor([len(r) for r in rests]).cumsum(0) + prefix - 1
    inputs = EncodedBatch(
        torch.tensor([ids], dtype=torch.long, device=device),
        _packed_mask([len(r) for r in rests], prefix, dtype).to(device),
        torch.tensor([positions], dtype=torch.long, device=device),
        [index for index, _ in prompts],
    )
    return Chunk(inputs, [int(e) for e in ends], [index for index, _ in prompts])


def packed_chunks(
    batches: Sequence[EncodedBatch], max_tokens: int, dtype: torch.dtype
) -> list[Chunk]:
    """The prompts of ``batches`` packed into rows of at most ``max_tokens`` tokens (at least one
    prompt per row), sharing their common token prefix: no padding, and the chat template's
    header is computed once per row instead of once per prompt. Attention cost grows with the row
    length, hence the cap."""
    prompts = _real_tokens(batches)
    prefix = shared_prefix_length([ids for _, ids in prompts])
    device = batches[0].input_ids.device
    chunks: list[Chunk] = []
    current: list[tuple[int, list[int]]] = []
    used = prefix
    for index, ids in prompts:
        own = len(ids) - prefix
        if current and used + own > max_tokens:
            chunks.append(_pack(current, prefix, dtype, device))
            current, used = [], prefix
        current.append((index, ids))
        used += own
    chunks.append(_pack(current, prefix, dtype, device))
    return chunks


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
    column_logits: torch.Tensor | None = None  # [B, len(logit_columns), V] float32


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


def _first_tensor(value: Any) -> torch.Tensor:
    return value if isinstance(value, torch.Tensor) else value[0]


def _mlp_at_columns(mlp: nn.Module, columns: torch.Tensor) -> list[Any]:
    """Hooks that run ``mlp`` on the tokens at ``columns`` only and put zeros elsewhere.

    Used on the last block a forward runs, whose output is read at a few tokens only (the next
    block input at the prompts' last tokens, or the logits there): the MLP, most of a block's
    compute, acts on each token alone, so the read tokens get exactly their values. Other tokens
    get finite nonsense that nothing reads."""
    width: list[int] = []

    def before(_m: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if args:
            width.append(int(args[0].shape[1]))
            return (args[0][:, columns], *args[1:]), kwargs
        if len(kwargs) != 1:  # an MLP takes the hidden states and nothing else
            return None
        ((name, value),) = kwargs.items()
        width.append(int(value.shape[1]))
        return args, {name: value[:, columns]}

    def after(_m: nn.Module, _args: Any, output: Any) -> Any:
        if not width:
            return None
        taken = _first_tensor(output)
        full = taken.new_zeros(taken.shape[0], width.pop(), *taken.shape[2:])
        full[:, columns] = taken
        return full if isinstance(output, torch.Tensor) else (full, *output[1:])

    # prepend: other hooks on the MLP (interventions) then see the taken tokens only, which is
    # the same as seeing all of them for the per-token transforms they apply.
    return [
        mlp.register_forward_pre_hook(before, with_kwargs=True, prepend=True),
        mlp.register_forward_hook(after),
    ]


def _logits_at(logits: torch.Tensor, columns: torch.Tensor, width: int) -> torch.Tensor:
    """Logits at ``columns``, whether the model kept only those (``logits_to_keep``) or all."""
    if logits.shape[1] == len(columns):
        return logits.float()
    if logits.shape[1] != width:
        raise RefusalkitError(f"unexpected logits shape {tuple(logits.shape)}")
    return logits[:, columns].float()


def call_model(
    model: nn.Module, batch: EncodedBatch, logits_to_keep: int | torch.Tensor = 1
) -> Any:
    """The model's forward on a left-padded batch, with logits for the last ``logits_to_keep``
    positions, or at the columns of a 1-D index tensor (all positions for model classes that do
    not support it)."""
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


def _inject_hook(block: nn.Module, states: torch.Tensor) -> RemovableHandle:
    """A pre-hook that replaces ``block``'s input with ``states``. Prepended, so that the hooks
    already on the block (interventions) act on the replaced input."""

    def inject(_m: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if args:
            return (states, *args[1:]), kwargs
        return args, {**kwargs, "hidden_states": states}

    return block.register_forward_pre_hook(inject, with_kwargs=True, prepend=True)


def _reader_hooks(
    adapter: ModelAdapter,
    read_layers: Sequence[int],
    index: torch.Tensor | None,
    stop_layer: int | None,
    readings: dict[int, torch.Tensor],
    handles: list[RemovableHandle],
    before_edits: bool = False,
) -> None:
    """Hooks (appended to ``handles`` one by one, so none leaks if a later one fails) that put
    each read residual point (at ``index``; None: every position) into ``readings`` as float32,
    and end the forward once ``stop_layer`` is read. Point ``l < n_layers`` is block ``l``'s input
    as the block sees it (after the edits hooked on it), or with ``before_edits`` as block
    ``l - 1`` returned it (before them); point ``n_layers`` is the decoder's output, after the
    final norm."""

    def keep(layer: int, hidden: torch.Tensor) -> None:
        taken = hidden if index is None else hidden[:, index]
        readings[layer] = taken.float()
        if layer == stop_layer:
            raise _StopForward

    def reader(layer: int) -> Any:
        def hook(_m: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
            keep(layer, _hidden_of(args, kwargs))

        return hook

    def final_reader(_m: nn.Module, _args: Any, output: Any) -> None:
        keep(adapter.n_layers, _first_tensor(output))

    for layer in sorted(set(read_layers)):
        if layer == adapter.n_layers:
            handles.append(adapter.decoder.register_forward_hook(final_reader))
        elif 0 <= layer < adapter.n_layers:
            block = adapter.layers[layer]
            handles.append(
                block.register_forward_pre_hook(
                    reader(layer), with_kwargs=True, prepend=before_edits
                )
            )
        else:
            raise ValueError(f"residual point {layer} out of range 0..{adapter.n_layers}")


def _last_block_columns(
    adapter: ModelAdapter,
    logits: bool,
    columns: torch.Tensor | None,
    index: torch.Tensor | None,
    stop_layer: int | None,
    device: torch.device,
) -> tuple[int, torch.Tensor | None]:
    """The last block a forward runs and the tokens read after it (see ``_mlp_at_columns``): the
    logit columns (the last token by default) when it computes logits, else the reading positions
    of the block after it; -1 or None when no such block or set of tokens exists."""
    if logits:
        taken = columns if columns is not None else torch.tensor([-1], device=device)
        return adapter.n_layers - 1, taken
    return (-1 if stop_layer is None or index is None else stop_layer - 1), index


def _run_model(
    adapter: ModelAdapter,
    batch: EncodedBatch,
    logits: bool,
    columns: torch.Tensor | None,
    first_block: int,
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """The model call from block ``first_block`` on, ended early by a reader's ``_StopForward``;
    ``(last_logits, column_logits)``, each None unless asked for."""
    last_logits = column_logits = None
    with torch.inference_mode(), _skip_blocks_before(adapter, first_block):
        try:
            output = call_model(adapter.model, batch, 1 if columns is None else columns)
            if logits and columns is None:
                last_logits = output.logits[:, -1, :].float()
            elif logits and columns is not None:
                column_logits = _logits_at(output.logits, columns, batch.input_ids.shape[1])
        except _StopForward:
            pass
    return last_logits, column_logits


def forward(
    adapter: ModelAdapter,
    batch: EncodedBatch,
    *,
    read_layers: Sequence[int] = (),
    positions: Sequence[int] | None = (-1,),
    logits: bool = False,
    start_layer: int = 0,
    start_states: torch.Tensor | None = None,
    logit_columns: Sequence[int] | None = None,
    sparse_last_block: bool = False,
    read_before_edits: bool = False,
) -> ForwardOutput:
    """One forward over ``batch`` under whatever interventions are active.

    ``positions=None`` keeps the full sequence. With ``start_states`` (the clean input of block
    ``start_layer`` for this batch) blocks before ``start_layer`` are skipped; this is exact when
    no active intervention touches them. With ``logits`` and ``logit_columns`` the logits at those
    columns come back as ``column_logits`` ``[B, len(columns), V]`` (packed rows hold several
    prompts, so their last tokens are not all at the last column). ``sparse_last_block`` runs the
    MLP of the last block computed only on the tokens read after it (see ``_mlp_at_columns``).
    ``read_before_edits`` reads each point before the edits hooked on that block's input (the
    previous block's output: the reference L_low convention); a point at ``start_layer`` cannot be
    read that way (its pre-edit value is the clean ``start_states``).

    Readings and logits come back as computed, NaN included: a NaN under an intervention belongs
    to that candidate (the selection's NaN filter drops it), so the unmodified model's values are
    checked where they are summarised instead (candidate means, the engine's clean passes).
    """
    readings: dict[int, torch.Tensor] = {}
    stop_layer = max(read_layers) if read_layers and not logits else None
    device = batch.input_ids.device
    index = None if positions is None else torch.tensor(list(positions), device=device)
    columns = None if logit_columns is None else torch.tensor(list(logit_columns), device=device)
    first_block = start_layer if start_states is not None else 0
    handles: list[RemovableHandle] = []
    try:  # registered inside the try: a failure part-way through still removes every hook
        if start_states is not None:
            handles.append(_inject_hook(adapter.layers[start_layer], start_states))
        _reader_hooks(adapter, read_layers, index, stop_layer, readings, handles, read_before_edits)
        if sparse_last_block:
            last_block, taken = _last_block_columns(
                adapter, logits, columns, index, stop_layer, device
            )
            if last_block >= first_block and taken is not None:
                handles += _mlp_at_columns(adapter.mlp_modules[last_block], taken)
        last_logits, column_logits = _run_model(adapter, batch, logits, columns, first_block)
    finally:
        for handle in handles:
            handle.remove()
    return ForwardOutput(readings, last_logits, column_logits)


def first_non_finite(values: torch.Tensor) -> tuple[int, int] | None:
    """``(row, layer)`` of the earliest layer holding a NaN/inf vector in ``values``
    ``[rows, layers, d]`` (the first such row there), or None when all is finite."""
    bad = ~torch.isfinite(values).all(-1)
    if not bad.any():
        return None
    layer = int(bad.any(0).nonzero()[0])
    return int(bad[:, layer].nonzero()[0]), layer


def non_finite_activations(
    layer: int, where: str, prompts: str, n_layers: int | None = None
) -> RefusalkitError:
    """The error for NaN/inf block inputs of the unmodified model, naming the first bad layer
    (``layer == n_layers``: the final norm's output, residual point L)."""
    source = "the token embeddings are" if layer == 0 else f"the output of block {layer - 1} is"
    point = "after the final norm" if layer == n_layers else f"at the input of block {layer}"
    return RefusalkitError(
        f"non-finite activations (NaN/inf) {point} ({where}) on the "
        f"{prompts} prompts: {source} not finite; run the model in float32 (--dtype float32) "
        "and check its weights"
    )
