"""Interventions on the residual stream, applied as context managers that always clean up.

All formulas follow SPEC §2. Projections are computed in float32 whatever the model dtype, and the
result is cast back. Hooks accept both calling conventions of decoder blocks (hidden states passed
positionally or as a keyword) and both return conventions of sub-modules (bare tensor or tuple).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Literal

import torch
from torch import nn

from refusalkit.models.adapter import ModelAdapter

if TYPE_CHECKING:
    from refusalkit.directions import CandidateSet

Transform = Callable[[torch.Tensor], torch.Tensor]


def unit(vector: torch.Tensor) -> torch.Tensor:
    return vector.float() / vector.float().norm().clamp_min(1e-12)


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

EditKind = Literal["ablation", "addition", "affine"]


@dataclass(frozen=True)
class ResidualEdit:
    """The one implementation of SPEC §2's interventions: their transform and where it hooks.

    Batched so the selection engine can score many candidates in one forward: the batch repeats
    ``R`` prompt rows ``copies`` times and copy ``c`` (rows ``c·R .. (c+1)·R − 1``) gets
    ``units[c]`` and ``shifts[c]``; a single intervention is one copy. The transform is
    ``v − (v·û)û`` (when ``units`` is set) then ``+ shift`` (when ``shifts`` is set), in float32
    whatever the model dtype. ``kind`` "ablation" hooks every block input and every residual
    writer's output (what is added to the residual stream: the attention and MLP outputs, or the
    post-norms of Gemma-2-style blocks — ``refusalkit.models.writers``); "addition" and "affine"
    hook the input of block ``layer`` only.
    """

    kind: EditKind
    layer: int
    units: torch.Tensor | None  # [copies, d] float32
    shifts: torch.Tensor | None  # [copies, d] float32

    @property
    def copies(self) -> int:
        vectors = self.units if self.units is not None else self.shifts
        assert vectors is not None
        return int(vectors.shape[0])

    @property
    def first_layer(self) -> int:
        """The first block whose input the edit changes (readings before it are the clean ones)."""
        return 0 if self.kind == "ablation" else self.layer

    def transform(self, values: torch.Tensor) -> torch.Tensor:
        v = values.float().reshape(self.copies, -1, values.shape[-1])
        if self.units is not None:
            units = self.units.to(v.device)
            v = v - torch.bmm(v, units.unsqueeze(-1)) * units.unsqueeze(1)
        if self.shifts is not None:
            v = v + self.shifts.to(v.device).unsqueeze(1)
        return v.reshape(values.shape).to(values.dtype)

    def to(self, device: torch.device) -> ResidualEdit:
        def moved(vectors: torch.Tensor | None) -> torch.Tensor | None:
            return None if vectors is None else vectors.to(device)

        return replace(self, units=moved(self.units), shifts=moved(self.shifts))

    def hook_specs(self, adapter: ModelAdapter) -> list[HookSpec]:
        transform = self.to(adapter.device).transform
        if self.kind != "ablation":
            return [(adapter.layers[self.layer], "pre", block_input_hook(transform))]
        specs: list[HookSpec] = [(b, "pre", block_input_hook(transform)) for b in adapter.layers]
        specs += [
            (writer, "post", module_output_hook(transform))
            for writers in adapter.residual_writers.modules
            for writer in writers
        ]
        return specs

    @staticmethod
    def stacked(edits: Sequence[ResidualEdit]) -> ResidualEdit:
        """Several single edits of one kind and layer as the copies of one batched edit."""
        first = edits[0]
        if any((e.kind, e.layer) != (first.kind, first.layer) for e in edits):
            raise ValueError("stacked edits must share their kind and layer")

        def cat(vectors: list[torch.Tensor | None]) -> torch.Tensor | None:
            present = [v for v in vectors if v is not None]
            return torch.cat(present) if present else None

        return ResidualEdit(
            first.kind,
            first.layer,
            cat([e.units for e in edits]),
            cat([e.shifts for e in edits]),
        )


def project_out(values: torch.Tensor, direction_unit: torch.Tensor) -> torch.Tensor:
    """``v − (v·r̂) r̂`` along the last axis, computed in float32."""
    return ResidualEdit("ablation", 0, direction_unit.float()[None], None).transform(values)


@dataclass(frozen=True)
class DirectionalAblation:
    """Remove ``r̂`` from every block input and every residual writer's output (all positions)."""

    direction: torch.Tensor

    def edit(self) -> ResidualEdit:
        return ResidualEdit("ablation", 0, unit(self.direction)[None], None)

    def hook_specs(self, adapter: ModelAdapter) -> list[HookSpec]:
        return self.edit().hook_specs(adapter)

    def describe(self) -> str:
        return "directional ablation (all layers)"


@dataclass(frozen=True)
class ActivationAddition:
    """``v ← v + α·r`` at the input of block ``layer`` (all positions)."""

    vector: torch.Tensor
    layer: int
    alpha: float = 1.0

    def edit(self) -> ResidualEdit:
        return ResidualEdit("addition", self.layer, None, (self.alpha * self.vector.float())[None])

    def hook_specs(self, adapter: ModelAdapter) -> list[HookSpec]:
        return self.edit().hook_specs(adapter)

    def describe(self) -> str:
        return f"activation addition at layer {self.layer}, alpha={self.alpha:g}"


@dataclass(frozen=True)
class AffineEdit:
    """ACE at the input of block ``layer``: ``v − (v·r̂)r̂ + (μ⁻·r̂)r̂ + α·r``."""

    direction: torch.Tensor
    reference: torch.Tensor  # μ⁻: the harmless mean at the candidate's position and layer
    layer: int
    alpha: float

    def edit(self) -> ResidualEdit:
        u = unit(self.direction)
        shift = (self.reference.float() @ u) * u + self.alpha * self.direction.float()
        return ResidualEdit("affine", self.layer, u[None], shift[None])

    def hook_specs(self, adapter: ModelAdapter) -> list[HookSpec]:
        return self.edit().hook_specs(adapter)

    def describe(self) -> str:
        return f"affine concept edit at layer {self.layer}, alpha={self.alpha:g}"


Intervention = DirectionalAblation | ActivationAddition | AffineEdit


def removal(candidates: CandidateSet, steering: str, position: int, layer: int) -> Intervention:
    """What removes candidate (position, layer)'s direction: LCE ablates it at every layer; ACE
    edits the input of its layer with α = 0 (the projection set to the harmless mean's)."""
    direction = candidates.direction(position, layer)
    if steering == "lce":
        return DirectionalAblation(direction)
    return AffineEdit(direction, candidates.reference(position, layer), layer, alpha=0.0)


def addition(
    candidates: CandidateSet, steering: str, position: int, layer: int, alpha: float = 1.0
) -> Intervention:
    """What adds candidate (position, layer)'s direction at its layer: LCE adds ``α·r``; ACE sets
    the projection to the harmless mean's and adds ``α·r``."""
    direction = candidates.direction(position, layer)
    if steering == "lce":
        return ActivationAddition(direction, layer, alpha)
    return AffineEdit(direction, candidates.reference(position, layer), layer, alpha=alpha)


def register(specs: list[HookSpec]) -> list[torch.utils.hooks.RemovableHandle]:
    handles = []
    for module, kind, hook in specs:
        if kind == "pre":
            handles.append(module.register_forward_pre_hook(hook, with_kwargs=True))
        else:
            handles.append(module.register_forward_hook(hook))
    return handles


@contextmanager
def applied(
    adapter: ModelAdapter, *interventions: Intervention | ResidualEdit | None
) -> Iterator[None]:
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
