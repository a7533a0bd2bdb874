"""Interventions on the residual stream, applied as context managers that always clean up.

All formulas follow SPEC §2. Projections are computed in float32 whatever the model dtype, and the
result is cast back. Hooks accept both calling conventions of decoder blocks (hidden states passed
positionally or as a keyword) and both return conventions of sub-modules (bare tensor or tuple).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from refusalkit.models.adapter import ModelAdapter

Transform = Callable[[torch.Tensor], torch.Tensor]


def unit(vector: torch.Tensor) -> torch.Tensor:
    return vector.float() / vector.float().norm().clamp_min(1e-12)


def project_out(values: torch.Tensor, direction_unit: torch.Tensor) -> torch.Tensor:
    """``v − (v·r̂) r̂`` along the last axis, computed in float32."""
    v = values.float()
    u = direction_unit.to(v.device)
    return (v - (v @ u).unsqueeze(-1) * u).to(values.dtype)


def _replace_hidden(args: tuple[Any, ...], kwargs: dict[str, Any], transform: Transform) -> Any:
    if args:
        return (transform(args[0]), *args[1:]), kwargs
    kwargs = dict(kwargs)
    kwargs["hidden_states"] = transform(kwargs["hidden_states"])
    return args, kwargs


def block_input_hook(transform: Transform) -> Callable[..., Any]:
    def hook(_module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        return _replace_hidden(args, kwargs, transform)

    return hook


def module_output_hook(transform: Transform) -> Callable[..., Any]:
    def hook(_module: nn.Module, _args: Any, output: Any) -> Any:
        if isinstance(output, torch.Tensor):
            return transform(output)
        return (transform(output[0]), *output[1:])

    return hook


HookSpec = tuple[nn.Module, str, Callable[..., Any]]  # (module, "pre" | "post", hook)


@dataclass(frozen=True)
class DirectionalAblation:
    """Remove ``r̂`` from every block input and every attention and MLP output (all positions)."""

    direction: torch.Tensor

    def hook_specs(self, adapter: ModelAdapter) -> list[HookSpec]:
        u = unit(self.direction).to(adapter.device)

        def transform(v: torch.Tensor) -> torch.Tensor:
            return project_out(v, u)

        specs: list[HookSpec] = [(b, "pre", block_input_hook(transform)) for b in adapter.layers]
        specs += [(m, "post", module_output_hook(transform)) for m in adapter.attention_modules]
        specs += [(m, "post", module_output_hook(transform)) for m in adapter.mlp_modules]
        return specs

    def describe(self) -> str:
        return "directional ablation (all layers)"


@dataclass(frozen=True)
class ActivationAddition:
    """``v ← v + α·r`` at the input of block ``layer`` (all positions)."""

    vector: torch.Tensor
    layer: int
    alpha: float = 1.0

    def hook_specs(self, adapter: ModelAdapter) -> list[HookSpec]:
        shift = (self.alpha * self.vector.float()).to(adapter.device)

        def transform(v: torch.Tensor) -> torch.Tensor:
            return (v.float() + shift).to(v.dtype)

        return [(adapter.layers[self.layer], "pre", block_input_hook(transform))]

    def describe(self) -> str:
        return f"activation addition at layer {self.layer}, alpha={self.alpha:g}"


@dataclass(frozen=True)
class AffineEdit:
    """ACE at the input of block ``layer``: ``v − (v·r̂)r̂ + (μ⁻·r̂)r̂ + α·r``."""

    direction: torch.Tensor
    reference: torch.Tensor  # μ⁻: the harmless mean at the candidate's position and layer
    layer: int
    alpha: float

    def hook_specs(self, adapter: ModelAdapter) -> list[HookSpec]:
        u = unit(self.direction).to(adapter.device)
        reference = self.reference.float().to(adapter.device)
        offset = (reference @ u) * u + self.alpha * self.direction.float().to(adapter.device)

        def transform(v: torch.Tensor) -> torch.Tensor:
            v32 = v.float()
            return (v32 - (v32 @ u).unsqueeze(-1) * u + offset).to(v.dtype)

        return [(adapter.layers[self.layer], "pre", block_input_hook(transform))]

    def describe(self) -> str:
        return f"affine concept edit at layer {self.layer}, alpha={self.alpha:g}"


Intervention = DirectionalAblation | ActivationAddition | AffineEdit


def register(specs: list[HookSpec]) -> list[torch.utils.hooks.RemovableHandle]:
    handles = []
    for module, kind, hook in specs:
        if kind == "pre":
            handles.append(module.register_forward_pre_hook(hook, with_kwargs=True))
        else:
            handles.append(module.register_forward_hook(hook))
    return handles


@contextmanager
def applied(adapter: ModelAdapter, *interventions: Intervention | None) -> Iterator[None]:
    """Apply interventions for the duration of the block; hooks are removed even on error."""
    handles: list[torch.utils.hooks.RemovableHandle] = []
    try:
        for intervention in interventions:
            if intervention is not None:
                handles += register(intervention.hook_specs(adapter))
        yield
    finally:
        for handle in handles:
            handle.remove()
