"""Which modules write to the residual stream: found structurally, checked by one forward.

Directional ablation (SPEC §2) must remove r̂ from *everything that writes to the residual
stream*. In Llama/Qwen/Mistral/Phi-3-style blocks those are the attention and MLP outputs:
``h_out = h_in + attn(·) + mlp(·)``. Post-norm families (Gemma-2, Gemma-3, OLMo-2) pass each
output through a norm before adding it — ``h_out = h_in + post_attn_norm(attn(·)) +
post_ffn_norm(mlp(·))`` — and the norm's per-coordinate gain brings a component along r̂ back, so
there the writers are the post-norms. Names do not tell the two apart (Llama's
``post_attention_layernorm`` is the norm *before* its MLP), so the writers are found by what they
do: one short forward records every block's input and output and the outputs of the block's
attention, MLP and norm children, and the pair whose outputs sum to ``h_out − h_in`` is the
pair of writers. A user override (``--residual-writers``) is checked the same way.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from refusalkit.errors import RefusalkitError

logger = logging.getLogger(__name__)

# Largest ‖(h_out − h_in) − Σ writers‖ / ‖h_out − h_in‖ over blocks accepted as "these are the
# writers": float32 sums agree to ~1e-6; half-precision models round every addend.
TOLERANCE = {torch.float32: 1e-3, torch.float64: 1e-6}
HALF_PRECISION_TOLERANCE = 5e-2


@dataclass(frozen=True)
class ResidualWriters:
    """Per block, the modules whose outputs are added to the residual stream, their names relative
    to the block, and how well they explained the probe's residual update."""

    modules: list[list[nn.Module]]
    names: tuple[str, ...]
    relative_error: float
    verified: bool

    def record(self) -> dict[str, Any]:
        """What ``provenance.json`` says about the hooks of directional ablation."""
        return {
            "modules": list(self.names),
            "max_relative_error": self.relative_error,
            "verified": self.verified,
        }


def _output_tensor(output: Any) -> torch.Tensor | None:
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, tuple) and output and isinstance(output[0], torch.Tensor):
        return output[0]
    return None


def _candidates(block: nn.Module, attention: nn.Module, mlp: nn.Module) -> dict[str, nn.Module]:
    """The block's attention and MLP modules and its norm children, by name relative to it."""
    found: dict[str, nn.Module] = {}
    for name, module in block.named_modules():
        if module is attention or module is mlp:
            found[name] = module
        elif name and "." not in name and "norm" in name.lower():
            found[name] = module
    return found


@dataclass
class _Probe:
    inputs: list[torch.Tensor]
    outputs: list[torch.Tensor]
    children: list[dict[str, torch.Tensor]]


def _probe(
    model: nn.Module, layers: nn.ModuleList, candidates: list[dict[str, nn.Module]]
) -> _Probe:
    """One forward of a few tokens recording every block's input and output and every candidate's
    output (each module's first call: a writer is called once per block)."""
    n = len(layers)
    probe = _Probe([torch.empty(0)] * n, [torch.empty(0)] * n, [{} for _ in range(n)])
    handles: list[torch.utils.hooks.RemovableHandle] = []

    def block_hooks(index: int) -> None:
        def pre(_m: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
            probe.inputs[index] = (args[0] if args else kwargs["hidden_states"]).double()

        def post(_m: nn.Module, _a: Any, output: Any) -> None:
            tensor = _output_tensor(output)
            if tensor is not None:
                probe.outputs[index] = tensor.double()

        handles.append(layers[index].register_forward_pre_hook(pre, with_kwargs=True))
        handles.append(layers[index].register_forward_hook(post))

    def child_hook(index: int, name: str, module: nn.Module) -> None:
        def post(_m: nn.Module, _a: Any, output: Any) -> None:
            tensor = _output_tensor(output)
            if tensor is not None and name not in probe.children[index]:
                probe.children[index][name] = tensor.double()

        handles.append(module.register_forward_hook(post))

    for index in range(n):
        block_hooks(index)
        for name, module in candidates[index].items():
            child_hook(index, name, module)
    device = next(model.parameters()).device
    ids = torch.arange(3, 7, device=device).unsqueeze(0)
    try:
        with torch.inference_mode():
            model(input_ids=ids, use_cache=False)
    finally:
        for handle in handles:
            handle.remove()
    return probe


def _pair_error(probe: _Probe, pair: tuple[str, str]) -> float:
    """Largest relative residual of ``h_out − h_in − (w₁ + w₂)`` over blocks (inf if missing)."""
    worst = 0.0
    for index, outputs in enumerate(probe.children):
        if pair[0] not in outputs or pair[1] not in outputs or probe.outputs[index].numel() == 0:
            return float("inf")
        update = probe.outputs[index] - probe.inputs[index]
        written = outputs[pair[0]] + outputs[pair[1]]
        if written.shape != update.shape:
            return float("inf")
        scale = float(update.norm()) or 1.0
        worst = max(worst, float((update - written).norm()) / scale)
    return worst


def find_residual_writers(
    model: nn.Module,
    layers: nn.ModuleList,
    attention: list[nn.Module],
    mlp: list[nn.Module],
    override: tuple[str, str] | None = None,
) -> ResidualWriters:
    """The two residual writers of every block, found and checked by one probe forward."""
    candidates = [_candidates(b, a, m) for b, a, m in zip(layers, attention, mlp, strict=True)]
    if override is not None:
        for block, found in zip(layers, candidates, strict=True):
            for path in override:
                found[path] = block.get_submodule(path)
    names = [name for name in candidates[0] if all(name in c for c in candidates)]
    direct = (_relative_name(layers[0], attention[0]), _relative_name(layers[0], mlp[0]))
    pairs = (
        [override]
        if override
        else [direct]
        + [(a, b) for a in names for b in names if a != b and a < b and (a, b) != direct]
    )
    probe = _probe(model, layers, candidates)
    errors = {pair: _pair_error(probe, pair) for pair in pairs}
    best = min(pairs, key=lambda pair: (errors[pair], pair != direct))
    dtype = next(model.parameters()).dtype
    tolerance = TOLERANCE.get(dtype, HALF_PRECISION_TOLERANCE)
    verified = errors[best] <= tolerance
    if override and not verified:
        raise RefusalkitError(
            f"--residual-writers {','.join(override)}: their outputs do not add up to the blocks' "
            f"residual updates (relative error {errors[best]:.2g}); name the two modules whose "
            "outputs are added to the residual stream"
        )
    if not verified:
        logger.warning(
            "could not verify which modules write to the residual stream (best: %s, relative "
            "error %.2g); ablating the attention and MLP outputs — check with "
            "--residual-writers if this model adds norms or other modules after them",
            ", ".join(direct), errors[direct],
        )  # fmt: skip
        best = direct
    modules = [[block.get_submodule(name) for name in best] for block in layers]
    return ResidualWriters(modules, best, errors[best], verified)


def _relative_name(block: nn.Module, module: nn.Module) -> str:
    for name, child in block.named_modules():
        if child is module:
            return name
    raise RefusalkitError(f"{type(module).__name__} is not inside the decoder block")
