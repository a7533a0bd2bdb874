"""The one adapter around a model: where its decoder blocks, attention and MLP outputs are.

Structure is discovered from the module tree (no per-family branches): the decoder blocks are the
``nn.ModuleList`` whose length is the configured layer count, and inside a block the attention and
MLP sub-modules are recognised by their attribute or class names. Every part can be overridden by a
dotted path when discovery guesses wrong.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from refusalkit.errors import RefusalkitError
from refusalkit.models.writers import ResidualWriters, find_residual_writers

# (exact attribute names, then a substring — never of a norm or dropout: GPT-NeoX has
# ``post_attention_layernorm`` and ``post_mlp_dropout`` beside ``attention`` and ``mlp``)
_ATTENTION = (
    re.compile(r"^(self_attn|attn|attention|self_attention)$"),
    re.compile("attention", re.I),
)
_MLP = (
    re.compile(r"^(mlp|ffn|feed_forward|feedforward)$"),
    re.compile("mlp|feedforward|ffn", re.I),
)
_NOT_A_SUBLAYER = re.compile("norm|dropout|drop", re.I)


@dataclass(frozen=True)
class ArchitectureOverride:
    """Dotted paths that replace discovery: ``layers`` from the model root, the others relative to
    one decoder block (e.g. ``layers="model.layers", attention="self_attn", mlp="mlp"``)."""

    layers: str | None = None
    attention: str | None = None
    mlp: str | None = None
    # The two modules (relative to a block) whose outputs are added to the residual stream, when
    # the probe cannot find them (see ``refusalkit.models.writers``).
    writers: tuple[str, str] | None = None


@dataclass
class ModelAdapter:
    model: nn.Module
    tokenizer: Any
    name: str
    layers: nn.ModuleList
    attention_modules: list[nn.Module]
    mlp_modules: list[nn.Module]
    layers_path: str
    block_returns_tuple: (
        bool  # decoder blocks return (hidden, ...) (older transformers) or a tensor
    )
    residual_writers: ResidualWriters  # what directional ablation hooks besides block inputs
    # The module that holds the blocks and returns the residual stream after the final norm (its
    # first output): what Hugging Face's ``hidden_states[-1]`` is, read for the reference L_low
    # convention (SPEC §3.1) as residual point ``n_layers``.
    decoder: nn.Module

    @property
    def n_layers(self) -> int:
        return len(self.layers)

    @property
    def hidden_size(self) -> int:
        return int(text_config(self.model).hidden_size)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype


def text_config(model: nn.Module) -> Any:
    config = model.config
    getter = getattr(config, "get_text_config", None)
    return getter() if callable(getter) else config


def _resolve(root: nn.Module, dotted: str) -> nn.Module:
    module: Any = root
    for part in dotted.split("."):
        if not hasattr(module, part):
            raise RefusalkitError(
                f"module path '{dotted}' not found in {type(root).__name__} (at '{part}'); "
                "check the override against the model's module names (print(model))"
            )
        module = getattr(module, part)
    if not isinstance(module, nn.Module):
        raise RefusalkitError(f"'{dotted}' is not a torch module")
    return module


def find_decoder_layers(model: nn.Module, override: str | None = None) -> tuple[str, nn.ModuleList]:
    if override:
        found = _resolve(model, override)
        if not isinstance(found, nn.ModuleList):
            raise RefusalkitError(f"'{override}' is a {type(found).__name__}, not a ModuleList")
        return override, found
    expected = getattr(text_config(model), "num_hidden_layers", None)
    candidates = [
        (name, module)
        for name, module in model.named_modules()
        if isinstance(module, nn.ModuleList) and len(module) > 0
        and (expected is None or len(module) == expected)
    ]  # fmt: skip
    if not candidates:
        raise RefusalkitError(
            f"could not find the decoder blocks of {type(model).__name__} (no ModuleList of "
            f"{expected} layers); pass the path with --layers-path, e.g. model.layers"
        )
    # The shallowest list is the decoder stack; deeper ones are e.g. experts inside a block.
    name, module = min(candidates, key=lambda item: (item[0].count("."), item[0]))
    return name, module


def _find_child(
    block: nn.Module,
    patterns: tuple[re.Pattern[str], re.Pattern[str]],
    override: str | None,
    what: str,
) -> nn.Module:
    if override:
        return _resolve(block, override)
    exact, loose = patterns
    children = [
        (name, child)
        for name, child in block.named_children()
        if not _NOT_A_SUBLAYER.search(name) and not _NOT_A_SUBLAYER.search(type(child).__name__)
    ]
    for name, child in children:  # an exact attribute name is the most specific signal
        if exact.search(name):
            return child
    for name, child in children:
        if loose.search(name):
            return child
    for _, child in children:
        if loose.search(type(child).__name__):
            return child
    names = ", ".join(name for name, _ in children)
    raise RefusalkitError(
        f"could not find the {what} module in {type(block).__name__} (children: {names}); "
        f"pass it with --{what}-path"
    )


def _probe_block_return(model: nn.Module, layers: nn.ModuleList) -> bool:
    """Run one token through the model to see how a decoder block returns its output."""
    seen: list[bool] = []
    handle = layers[0].register_forward_hook(
        lambda _m, _a, out: seen.append(not isinstance(out, torch.Tensor))
    )
    try:
        with torch.inference_mode():
            device = next(model.parameters()).device
            model(input_ids=torch.zeros((1, 1), dtype=torch.long, device=device), use_cache=False)
    finally:
        handle.remove()
    return bool(seen and seen[0])


def _decoder_of(model: nn.Module, layers_path: str) -> nn.Module:
    parent, _, _ = layers_path.rpartition(".")
    if not parent:
        raise RefusalkitError(
            f"the decoder blocks '{layers_path}' sit on the model root; refusalkit needs them "
            "inside a base model that applies the final norm (e.g. model.layers)"
        )
    return _resolve(model, parent)


def build_adapter(
    model: nn.Module, tokenizer: Any, name: str, override: ArchitectureOverride | None = None
) -> ModelAdapter:
    override = override or ArchitectureOverride()
    layers_path, layers = find_decoder_layers(model, override.layers)
    attention = [_find_child(b, _ATTENTION, override.attention, "attention") for b in layers]
    mlp = [_find_child(b, _MLP, override.mlp, "mlp") for b in layers]
    return ModelAdapter(
        residual_writers=find_residual_writers(model, layers, attention, mlp, override.writers),
        block_returns_tuple=_probe_block_return(model, layers),
        model=model,
        tokenizer=tokenizer,
        name=name,
        layers=layers,
        attention_modules=attention,
        mlp_modules=mlp,
        layers_path=layers_path,
        decoder=_decoder_of(model, layers_path),
    )
