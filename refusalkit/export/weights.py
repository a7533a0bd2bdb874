"""Interventions written into the weights (SPEC §2's weight orthogonalization and the bias form of
activation addition), so that an edited model loads anywhere with no hooks.

Directional ablation removes r̂ from every block input and from everything written to the residual
stream. In weight form the residual stream never receives r̂ in the first place: the token
embeddings and each residual writer's output projection are orthogonalized, so every block input
is already free of r̂ and the block-input part of the hook form has nothing left to remove. Which
projection writes is found by what it does — one probe forward records every linear map in a
block and the writers' inputs and outputs — never by name:

- pre-norm blocks (Llama, Qwen2, Mistral, Phi-3): the writer's output *is* its last projection's
  output (``o_proj``, ``down_proj``, ``dense``…): ``W ← (I − r̂r̂ᵀ)W``, ``b ← b − (b·r̂)r̂``. Exactly
  the hook form, up to float rounding.
- post-norm blocks (Gemma-2/3, OLMo-2): the writer is an RMS norm ``y = g ⊙ o / rms(o)`` of a
  projection's output ``o``. ``y·r̂ = (o·(g ⊙ r̂)) / rms(o)``, so orthogonalizing the projection
  against ``u = normalize(g ⊙ r̂)`` makes every written vector orthogonal to r̂ exactly — the
  residual stream holds no r̂, as with hooks — but it is *not* the hook form: the hook subtracts
  r̂'s component after the norm (keeping ``rms(o)``), the weight form removes ``u``'s before it
  (changing ``rms(o)`` and the other coordinates through ``g``). The verification's logit
  difference measures how far apart they are on each model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from refusalkit.errors import RefusalkitError
from refusalkit.models.adapter import ModelAdapter

# A probe output "is" another when they agree to this (float32 forward of the same values).
SAME = 1e-4


def _is_projection(module: nn.Module) -> bool:
    """nn.Linear, or transformers' GPT-2 Conv1D (weight stored [in, out])."""
    return isinstance(module, nn.Linear) or type(module).__name__ == "Conv1D"


def _first(value: Any) -> torch.Tensor:
    return value if isinstance(value, torch.Tensor) else value[0]


@dataclass(frozen=True)
class Projection:
    """A map whose output (after ``gain``, for post-norm writers) is added to the residual."""

    module: nn.Module
    name: str  # relative to the model
    gain: torch.Tensor | None  # the post-norm's per-coordinate gain; None: pre-norm (no norm after)

    def unit_for(self, direction: torch.Tensor) -> torch.Tensor:
        """The unit vector to orthogonalize this projection's outputs against."""
        u = direction.double() if self.gain is None else direction.double() * self.gain.double()
        return u / u.norm().clamp_min(1e-30)


def _norm_gain(norm: nn.Module, width: int, probe: torch.Tensor) -> torch.Tensor:
    """The per-coordinate gain of an RMS norm, checked on the probe's input: ``norm(x)`` must point
    along ``gain ⊙ x`` (an RMS norm), else there is no exact weight form to write."""
    param = next(norm.parameters())
    with torch.inference_mode():
        gain = norm(torch.ones(1, 1, width, dtype=param.dtype, device=param.device))[0, 0].double()
        out = norm(probe[None, None].to(param.dtype))[0, 0].double()
    expected = gain * probe.double()
    cosine = float(out @ expected / (out.norm() * expected.norm()).clamp_min(1e-30))
    if not cosine > 1 - 1e-4:
        raise RefusalkitError(
            f"the residual writer {type(norm).__name__} is not an RMS norm (cosine {cosine:.4f}): "
            "directional ablation has no weight form for it; use the hooks (refusalkit chat, "
            "the Python API) instead of an exported model"
        )
    return gain.float().cpu()


def residual_projections(adapter: ModelAdapter) -> list[list[Projection]]:
    """Per block, the projections whose outputs reach the residual stream (one probe forward)."""
    names = {module: name for name, module in adapter.model.named_modules()}
    outputs: dict[nn.Module, torch.Tensor] = {}
    inputs: dict[nn.Module, torch.Tensor] = {}
    handles = []

    def record(module: nn.Module, args: tuple[Any, ...], output: Any) -> None:
        outputs[module] = _first(output).detach()
        if args:
            inputs[module] = args[0].detach()

    writers = [w for block in adapter.residual_writers.modules for w in block]
    watched = {m for block in adapter.layers for m in block.modules() if _is_projection(m)}
    watched |= set(writers)
    try:
        for module in watched:
            handles.append(module.register_forward_hook(record))
        with torch.inference_mode():
            ids = torch.arange(3, 7, device=adapter.device)[None]
            adapter.model(input_ids=ids, use_cache=False)
    finally:
        for handle in handles:
            handle.remove()
    found: list[list[Projection]] = []
    for block, block_writers in zip(adapter.layers, adapter.residual_writers.modules, strict=True):
        projections = [m for m in block.modules() if _is_projection(m)]
        found.append(
            [_projection_of(w, projections, inputs, outputs, names) for w in block_writers]
        )
    return found


def _projection_of(
    writer: nn.Module,
    projections: list[nn.Module],
    inputs: dict[nn.Module, torch.Tensor],
    outputs: dict[nn.Module, torch.Tensor],
    names: dict[nn.Module, str],
) -> Projection:
    written = outputs[writer]
    own = [p for p in projections if any(p is m for m in writer.modules())]
    for projection in own:  # pre-norm: the writer's output is one of its projections' outputs
        if projection in outputs and _same(outputs[projection], written):
            return Projection(projection, names[projection], None)
    if writer in inputs and not own:  # post-norm: a norm of some projection's output
        for projection in projections:
            if projection in outputs and _same(outputs[projection], inputs[writer]):
                probe = inputs[writer].reshape(-1, inputs[writer].shape[-1])[-1].float()
                gain = _norm_gain(writer, int(written.shape[-1]), probe)
                return Projection(projection, names[projection], gain)
    raise RefusalkitError(
        f"no linear map of {names.get(writer, type(writer).__name__)} writes its output: "
        "refusalkit cannot write this model's ablation into weights"
    )


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    if a.shape != b.shape:
        return False
    scale = float(b.double().norm()) or 1.0
    return float((a.double() - b.double()).norm()) <= SAME * scale


def _output_rows(projection: nn.Module) -> torch.Tensor:
    """The weight with output coordinates on axis 0 (a view: Conv1D stores it transposed)."""
    weight = projection.weight
    assert isinstance(weight, torch.Tensor)
    return weight.T if type(projection).__name__ == "Conv1D" else weight


def orthogonalize_(matrix: torch.Tensor, unit: torch.Tensor) -> None:
    """In place, for ``matrix`` with output coordinates on axis 0: ``M ← M − u (uᵀ M)``."""
    u = unit.to(torch.float64).to(matrix.device)
    updated = matrix.double() - torch.outer(u, u @ matrix.double())
    matrix.copy_(updated.to(matrix.dtype))


def untie_embeddings(adapter: ModelAdapter) -> bool:
    """Give the LM head its own copy of a tied embedding matrix (so orthogonalizing the input
    embeddings leaves the output projection as it was); True if they were tied."""
    model: Any = adapter.model
    head = model.get_output_embeddings()
    embedding = model.get_input_embeddings()
    if head is None or head.weight.data_ptr() != embedding.weight.data_ptr():
        return False
    head.weight = nn.Parameter(embedding.weight.detach().clone())
    model.config.tie_word_embeddings = False
    text = getattr(model.config, "get_text_config", None)
    if callable(text):
        text().tie_word_embeddings = False
    return True


def ablate_weights(adapter: ModelAdapter, direction: torch.Tensor) -> dict[str, Any]:
    """Directional ablation of ``direction`` written into ``adapter.model``'s weights (in place);
    returns what was changed."""
    model: Any = adapter.model
    unit = direction.double() / direction.double().norm().clamp_min(1e-30)
    projections = residual_projections(adapter)
    untied = untie_embeddings(adapter)
    changed = []
    with torch.no_grad():
        # Each embedding row is a vector written into the residual stream: orthogonalize the rows.
        orthogonalize_(model.get_input_embeddings().weight.T, unit)
        changed.append("input embeddings")
        for block in projections:
            for projection in block:
                u = projection.unit_for(unit)
                orthogonalize_(_output_rows(projection.module), u)
                bias = getattr(projection.module, "bias", None)
                if bias is not None:
                    orthogonalize_(bias[:, None], u)
                changed.append(projection.name)
    post_norm = any(p.gain is not None for block in projections for p in block)
    return {
        "untied_embeddings": untied,
        "orthogonalized": changed,
        "form": "post-norm (exact r̂-free residual, not the hook form)"
        if post_norm
        else "pre-norm (equals the hook form)",
    }


def add_bias(adapter: ModelAdapter, layer: int, vector: torch.Tensor) -> dict[str, Any]:
    """Activation addition of ``vector`` at block ``layer``'s input, written as a bias on the last
    residual projection of block ``layer − 1`` (exact for pre-norm blocks: what it writes is added
    to the residual stream unchanged). The checkpoint must stay loadable by plain transformers, so
    the bias goes where the model's config already has one (or can switch one on: ``mlp_bias``);
    other architectures are refused with the reason."""
    model: Any = adapter.model
    if layer < 1:
        # A run never selects layer 0 (its post-instruction candidates are zero: the zero filter).
        raise RefusalkitError("activation addition at layer 0 has no block before it to bias")
    projection = residual_projections(adapter)[layer - 1][-1]
    if projection.gain is not None:
        raise RefusalkitError(
            "this model's blocks end in a norm (post-norm family): no bias written before it adds "
            "a constant to the residual stream, so activation addition has no exact weight form"
        )
    module = projection.module
    config = model.config
    if getattr(module, "bias", None) is None:
        if not hasattr(config, "mlp_bias"):
            raise RefusalkitError(
                f"{type(model).__name__}'s config has no bias on {projection.name}, so a "
                "checkpoint holding one would not load in plain transformers; use the hook form "
                "(refusalkit chat, the Python API) for activation addition on this model"
            )
        config.mlp_bias = True  # every MLP projection gets a bias: zero except this one
        for block in adapter.layers:
            for linear in block.modules():
                if isinstance(linear, nn.Linear) and linear.bias is None and _in_mlp(block, linear):
                    linear.bias = nn.Parameter(
                        torch.zeros(
                            linear.out_features,
                            dtype=linear.weight.dtype,
                            device=linear.weight.device,
                        )
                    )
    bias: torch.Tensor = module.bias  # type: ignore[assignment]
    with torch.no_grad():
        bias += vector.to(dtype=bias.dtype, device=bias.device)
    return {"biased": projection.name, "config_mlp_bias": bool(getattr(config, "mlp_bias", False))}


def _in_mlp(block: nn.Module, linear: nn.Module) -> bool:
    for name, module in block.named_modules():
        if module is linear:
            return name.split(".")[0] in ("mlp", "feed_forward", "ffn")
    return False
