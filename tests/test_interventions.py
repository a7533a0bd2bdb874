"""Interventions as hooks (SPEC §2) and the start-layer shortcut of ``activations.forward``."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import torch

from refusalkit.activations import EncodedBatch, encode_batches, forward
from refusalkit.interventions import (
    ActivationAddition,
    AffineEdit,
    DirectionalAblation,
    applied,
    project_out,
    unit,
)
from refusalkit.models.adapter import ModelAdapter
from refusalkit.prompts.chat import build_chat_format
from refusalkit.prompts.datasets import Prompt
from tests.oracle import decoder_blocks, residual_writers

PROMPTS = [
    Prompt("How do I bake bread?"),
    Prompt("Explain recursion, step by step, with a simple example in Python."),
    Prompt("x"),
    Prompt("Write a haiku about autumn leaves and the quiet evening."),
]


def _batch(adapter: ModelAdapter) -> EncodedBatch:
    chat = build_chat_format(adapter.tokenizer)
    (batch,) = encode_batches(chat, PROMPTS, batch_size=len(PROMPTS), device=adapter.device)
    assert int(batch.attention_mask.sum()) < batch.attention_mask.numel()  # really left padded
    return batch


def _direction(adapter: ModelAdapter, seed: int = 1, scale: float = 3.7) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return scale * torch.randn(adapter.hidden_size, generator=generator)


def _logits(adapter: ModelAdapter, batch: EncodedBatch) -> torch.Tensor:
    with torch.inference_mode():
        return adapter.model(
            input_ids=batch.input_ids,
            attention_mask=batch.attention_mask,
            position_ids=batch.position_ids,
            use_cache=False,
        ).logits


def _hook_count(adapter: ModelAdapter) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in adapter.model.modules())


@contextmanager
def recording(adapter: ModelAdapter) -> Iterator[dict[str, list[torch.Tensor | None]]]:
    """Record every block input, block output and the outputs of the two modules that write to the
    residual stream (float32 clones; the writers named by the oracle's own family table, not by
    refusalkit's discovery), with hooks registered now, i.e. after any intervention hooks."""
    n = adapter.n_layers
    seen: dict[str, list[torch.Tensor | None]] = {
        k: [None] * n for k in ("block_in", "block_out", "attn_write", "mlp_write")
    }

    def first(value):
        return value if isinstance(value, torch.Tensor) else value[0]

    def pre(key, i):
        def hook(_m, args, kwargs):
            hidden = args[0] if args else kwargs["hidden_states"]
            seen[key][i] = hidden.detach().float().clone()

        return hook

    def post(key, i):
        def hook(_m, _args, output):
            seen[key][i] = first(output).detach().float().clone()

        return hook

    handles = []
    blocks, writers = decoder_blocks(adapter.model), residual_writers(adapter.model)
    for i in range(n):
        handles.append(blocks[i].register_forward_pre_hook(pre("block_in", i), with_kwargs=True))
        handles.append(blocks[i].register_forward_hook(post("block_out", i)))
        handles.append(writers[2 * i].register_forward_hook(post("attn_write", i)))
        handles.append(writers[2 * i + 1].register_forward_hook(post("mlp_write", i)))
    try:
        yield seen
    finally:
        for handle in handles:
            handle.remove()


def _assert_orthogonal(values: torch.Tensor, u: torch.Tensor, what: str) -> None:
    projection = (values.double() @ u.double()).abs()
    norms = values.double().norm(dim=-1)
    assert norms.max() > 1e-3, f"{what}: vacuous (all zero)"
    bound = 1e-4 * norms + 1e-6
    assert bool((projection <= bound).all()), f"{what}: max |v·r̂| = {projection.max():.3g}"


# --- unit-level formulas -------------------------------------------------------------------------


def test_project_out_in_float32_for_low_precision_inputs() -> None:
    torch.manual_seed(0)
    u = unit(torch.randn(16))
    v = torch.randn(3, 5, 16).to(torch.bfloat16)
    out = project_out(v, u)
    assert out.dtype == torch.bfloat16 and out.shape == v.shape
    expected = v.float() - (v.float() @ u).unsqueeze(-1) * u
    torch.testing.assert_close(out.float(), expected.to(torch.bfloat16).float())
    assert torch.isclose(unit(torch.tensor([3.0, 4.0])), torch.tensor([0.6, 0.8])).all()


# --- directional ablation ------------------------------------------------------------------------


def test_directional_ablation_everywhere_and_clean_exit(any_adapter) -> None:
    adapter = any_adapter
    batch = _batch(adapter)
    r = _direction(adapter)
    u = unit(r)
    before = _logits(adapter, batch)
    n_hooks = _hook_count(adapter)

    with recording(adapter) as clean:
        _logits(adapter, batch)
    assert (
        clean["block_in"][1].double() @ u.double()
    ).abs().max() > 1e-3  # not orthogonal by chance

    with applied(adapter, DirectionalAblation(r)):
        assert _hook_count(adapter) == n_hooks + 3 * adapter.n_layers
        with recording(adapter) as seen:
            during = _logits(adapter, batch)
    for i in range(adapter.n_layers):
        for key in ("block_in", "attn_write", "mlp_write"):
            assert seen[key][i] is not None
            _assert_orthogonal(seen[key][i], u, f"{key}[{i}]")
    assert not torch.allclose(during, before)

    assert _hook_count(adapter) == n_hooks
    after = _logits(adapter, batch)
    assert torch.equal(after, before)


def test_directional_ablation_residual_writes_are_orthogonal(any_adapter) -> None:
    """Every family, pre-norm or post-norm (Gemma-2 normalises its attention and MLP outputs
    before adding them): what each block writes into the residual stream, and so the residual,
    has no component along r̂."""
    adapter = any_adapter
    batch = _batch(adapter)
    r = _direction(adapter, seed=2)
    u = unit(r)
    with applied(adapter, DirectionalAblation(r)), recording(adapter) as seen:
        _logits(adapter, batch)
    for i in range(adapter.n_layers):
        _assert_orthogonal(seen["block_out"][i], u, f"block_out[{i}]")
        _assert_orthogonal(seen["block_out"][i] - seen["block_in"][i], u, f"write[{i}]")


def test_ablation_is_idempotent_and_ignores_the_length_and_sign_of_r(family_adapter) -> None:
    """A second ablation along the same line (here -2r) changes nothing: only r̂ matters."""
    adapter = family_adapter
    batch = _batch(adapter)
    r = _direction(adapter, seed=5)
    with applied(adapter, DirectionalAblation(r)):
        once = _logits(adapter, batch)
    with applied(adapter, DirectionalAblation(r), DirectionalAblation(-2.0 * r)):
        twice = _logits(adapter, batch)
    torch.testing.assert_close(twice, once, atol=1e-4, rtol=1e-4)


# --- activation addition -------------------------------------------------------------------------


@pytest.mark.parametrize("layer", [0, 2])
@pytest.mark.parametrize("alpha", [1.0, -0.5])
def test_activation_addition_adds_alpha_r_at_its_layer_only(any_adapter, layer, alpha) -> None:
    adapter = any_adapter
    batch = _batch(adapter)
    r = _direction(adapter, seed=3)
    with recording(adapter) as clean:
        _logits(adapter, batch)
    with applied(adapter, ActivationAddition(r, layer, alpha)), recording(adapter) as steered:
        _logits(adapter, batch)
    for i in range(layer):
        assert torch.equal(steered["block_in"][i], clean["block_in"][i])
    difference = steered["block_in"][layer] - clean["block_in"][layer]
    expected = (alpha * r).expand_as(difference)
    torch.testing.assert_close(difference, expected, atol=2e-5, rtol=0)
    later = layer + 1
    assert not torch.allclose(steered["block_in"][later], clean["block_in"][later])
    assert _hook_count(adapter) == 0


# --- affine concept editing ----------------------------------------------------------------------


@pytest.mark.parametrize("alpha", [0.0, 1.0, -0.5])
def test_affine_edit_sets_the_projection(any_adapter, alpha) -> None:
    adapter = any_adapter
    batch = _batch(adapter)
    layer = 2
    r = _direction(adapter, seed=4, scale=2.5)
    u = unit(r)
    reference = _direction(adapter, seed=6, scale=1.3)  # μ⁻
    with recording(adapter) as clean:
        _logits(adapter, batch)
    with applied(adapter, AffineEdit(r, reference, layer, alpha)), recording(adapter) as edited:
        _logits(adapter, batch)
    for i in range(layer):
        assert torch.equal(edited["block_in"][i], clean["block_in"][i])
    v_clean = clean["block_in"][layer]
    v_edit = edited["block_in"][layer]
    target = float(reference @ u) + alpha * float(r.norm())
    projection = v_edit @ u
    torch.testing.assert_close(
        projection, torch.full_like(projection, target), atol=1e-4, rtol=1e-5
    )
    # The part orthogonal to r̂ is untouched.
    torch.testing.assert_close(
        project_out(v_edit, u), project_out(v_clean, u), atol=1e-5, rtol=1e-5
    )


# --- cleanup on error ----------------------------------------------------------------------------


def test_hooks_are_removed_when_the_body_raises(any_adapter) -> None:
    adapter = any_adapter
    batch = _batch(adapter)
    r = _direction(adapter)
    before = _logits(adapter, batch)
    n_hooks = _hook_count(adapter)
    interventions = (
        DirectionalAblation(r),
        None,
        ActivationAddition(r, 1, 2.0),
        AffineEdit(r, torch.zeros_like(r), 2, 1.0),
    )
    with pytest.raises(RuntimeError, match="boom"), applied(adapter, *interventions):
        assert _hook_count(adapter) > n_hooks
        raise RuntimeError("boom")
    assert _hook_count(adapter) == n_hooks
    assert torch.equal(_logits(adapter, batch), before)


def test_hooks_are_removed_when_registration_fails(any_adapter) -> None:
    """An intervention that fails while being set up (layer out of range) leaves nothing behind."""
    adapter = any_adapter
    r = _direction(adapter)
    n_hooks = _hook_count(adapter)
    with (
        pytest.raises(IndexError),
        applied(adapter, DirectionalAblation(r), ActivationAddition(r, adapter.n_layers + 3)),
    ):
        pass
    assert _hook_count(adapter) == n_hooks


# --- the start-layer shortcut of activations.forward ----------------------------------------------


def _make_intervention(kind: str, adapter: ModelAdapter, layer: int):
    r = _direction(adapter, seed=7)
    if kind == "addition":
        return ActivationAddition(r, layer, -1.0)
    reference = _direction(adapter, seed=8, scale=0.5)
    return AffineEdit(r, reference, layer, 1.0)


@pytest.mark.parametrize("layer", [1, 2])
@pytest.mark.parametrize("kind", ["addition", "affine"])
def test_start_layer_shortcut_is_exact(any_adapter, kind, layer) -> None:
    adapter = any_adapter
    batch = _batch(adapter)
    later = list(range(layer, adapter.n_layers))
    positions = [-3, -2, -1]
    clean = forward(adapter, batch, read_layers=[layer], positions=None).readings[layer]
    assert clean.shape[:2] == batch.input_ids.shape

    intervention = _make_intervention(kind, adapter, layer)
    originals = list(adapter.layers)
    calls = []
    spy = adapter.layers[0].register_forward_hook(lambda *_: calls.append(1))
    try:
        with applied(adapter, intervention):
            full = forward(adapter, batch, read_layers=later, positions=positions, logits=True)
            n_full_calls = len(calls)
            short = forward(
                adapter,
                batch,
                read_layers=later,
                positions=positions,
                logits=True,
                start_layer=layer,
                start_states=clean,
            )
    finally:
        spy.remove()
    assert n_full_calls == 1 and len(calls) == 1  # the shortcut really skipped block 0
    assert list(adapter.layers) == originals  # blocks put back
    for i in later:
        torch.testing.assert_close(short.readings[i], full.readings[i], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(short.last_logits, full.last_logits, atol=1e-5, rtol=1e-5)

    # The comparison is not vacuous: the intervention changes the readings.
    plain = forward(adapter, batch, read_layers=later, positions=positions, logits=True)
    assert not torch.allclose(plain.readings[later[-1]], full.readings[later[-1]], atol=1e-4)


def test_forward_stops_early_and_reads_positions(family_adapter) -> None:
    adapter = family_adapter
    batch = _batch(adapter)
    calls = []
    spy = adapter.layers[-1].register_forward_hook(lambda *_: calls.append(1))
    try:
        out = forward(adapter, batch, read_layers=[0, 1], positions=[-2, -1])
    finally:
        spy.remove()
    assert calls == []  # no logits asked for: the forward stopped at block 1's input
    assert out.last_logits is None
    assert out.readings[1].shape == (batch.size, 2, adapter.hidden_size)
    assert out.readings[0].dtype == torch.float32
    full = forward(adapter, batch, read_layers=[1], positions=None)
    torch.testing.assert_close(out.readings[1], full.readings[1][:, -2:])
