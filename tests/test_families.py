"""Directional ablation on every model family the papers used (issue 14), measured from the
model's own ``output_hidden_states`` and raw hooks — nothing of refusalkit's hooks or discovery is
used to read the residual stream."""

from __future__ import annotations

import pytest
import torch

import refusalkit as rk
from refusalkit.models.writers import ResidualWriters
from tests.oracle import decoder_blocks
from tests.tiny import MODEL_FAMILIES, make_model, make_tokenizer

BOUND = 1e-5  # |h·r̂| / ‖h‖ after every block under ablation (issue 14's bound)

# What each family's blocks add to the residual stream (from transformers' modelling code).
EXPECTED_WRITERS = {
    "llama": ("self_attn", "mlp"),
    "qwen2": ("self_attn", "mlp"),
    "mistral": ("self_attn", "mlp"),
    "phi3": ("self_attn", "mlp"),
    "gemma2": ("post_attention_layernorm", "post_feedforward_layernorm"),
}


def _model(family: str, tied: bool) -> rk.ModelAdapter:
    tokenizer = make_tokenizer("chatml")
    model = make_model(family, tied, n_layers=4, vocab_size=len(tokenizer),
                       pad_token_id=tokenizer.pad_token_id)  # fmt: skip
    return rk.wrap(model, tokenizer)


def _residuals(model: rk.ModelAdapter, ids: torch.Tensor) -> list[torch.Tensor]:
    """The residual stream after every block: ``hidden_states[1:L]`` are the inputs of blocks
    1..L-1 (= outputs of blocks 0..L-2); the last block's output is read with a raw hook, since
    ``hidden_states[L]`` is after the final norm."""
    last: list[torch.Tensor] = []
    block = decoder_blocks(model.model)[-1]
    handle = block.register_forward_hook(
        lambda _m, _a, out: last.append(out if isinstance(out, torch.Tensor) else out[0])
    )
    try:
        with torch.inference_mode():
            hidden = model.model(input_ids=ids, output_hidden_states=True).hidden_states
    finally:
        handle.remove()
    return [*hidden[1 : model.n_layers], last[0]]


def _worst_projection(residuals: list[torch.Tensor], u: torch.Tensor) -> float:
    return max(
        float(((h.double() @ u.double()).abs() / h.double().norm(dim=-1)).max()) for h in residuals
    )


@pytest.mark.parametrize("tied", [False, True], ids=["untied", "tied"])
@pytest.mark.parametrize("family", MODEL_FAMILIES)
def test_ablation_leaves_no_component_along_r_after_any_block(family, tied):
    model = _model(family, tied)
    assert model.residual_writers.names == EXPECTED_WRITERS[family]
    assert model.residual_writers.verified
    ids = torch.tensor([[5, 9, 14, 3, 27, 41, 8]])
    r = torch.randn(model.hidden_size, generator=torch.Generator().manual_seed(3))
    u = r / r.norm()
    assert _worst_projection(_residuals(model, ids), u) > 1e-2  # not orthogonal by chance
    with rk.Direction.from_vector(r).ablate(model):
        ablated = _residuals(model, ids)
    assert _worst_projection(ablated, u) <= BOUND


def test_the_check_catches_hooks_on_the_attention_and_mlp_outputs_of_gemma2():
    """The bound above fails when Gemma-2's ablation hooks the attention and MLP outputs, as it
    did before issue 14: the post-norms' gains bring r̂ back."""
    model = _model("gemma2", False)
    blocks = decoder_blocks(model.model)
    model.residual_writers = ResidualWriters(
        [[block.self_attn, block.mlp] for block in blocks], ("self_attn", "mlp"), 0.0, True
    )
    ids = torch.tensor([[5, 9, 14, 3, 27, 41, 8]])
    r = torch.randn(model.hidden_size, generator=torch.Generator().manual_seed(3))
    with rk.Direction.from_vector(r).ablate(model):
        ablated = _residuals(model, ids)
    assert _worst_projection(ablated, r / r.norm()) > 1e-3


def test_provenance_names_the_hooked_modules():
    record = _model("gemma2", False).residual_writers.record()
    assert record["modules"] == ["post_attention_layernorm", "post_feedforward_layernorm"]
    assert record["verified"] and record["max_relative_error"] < 1e-5


def test_a_wrong_writers_override_is_refused():
    tokenizer = make_tokenizer("chatml")
    model = make_model("gemma2", False, n_layers=2, vocab_size=len(tokenizer),
                       pad_token_id=tokenizer.pad_token_id)  # fmt: skip
    override = rk.ArchitectureOverride(writers=("self_attn", "mlp"))
    with pytest.raises(rk.RefusalkitError, match="do not add up"):
        rk.wrap(model, tokenizer, override=override)
