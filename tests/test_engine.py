"""The fast COSMIC engine against the straightforward oracle (tests/oracle.py) on tiny models."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch

from refusalkit.activations import (
    encode_batches,
    forward,
    packed_chunks,
    padded_chunks,
    shared_prefix_length,
)
from refusalkit.directions import compute_candidates
from refusalkit.errors import RefusalkitError
from refusalkit.prompts.chat import build_chat_format
from refusalkit.prompts.datasets import Prompt, builtin_prompts, split_prompts
from refusalkit.selection.cosmic import (
    CosmicSettings,
    EvaluationLayers,
    cosine,
    low_similarity_layers,
)
from refusalkit.selection.engine import (
    CosmicEngine,
    EngineOptions,
    RefusalScoreEngine,
    identity_candidates,
)
from refusalkit.selection.refusal_score import RefusalScoreSettings, RefusalTokens, refusal_tokens
from tests.oracle import (
    cosmic_oracle_pick,
    cosmic_oracle_scores,
    l_low_oracle,
    refusal_score_oracle,
    refusal_score_oracle_pick,
)
from tests.tiny import FAMILY_TEMPLATE, make_adapter

N_LAYERS = 6


@pytest.fixture(scope="module", params=["llama", "qwen2", "gemma2", "mistral", "phi3"])
def setup(request):
    # Mistral and Phi-3 (fused qkv/gate_up projections) with the chatml tokenizer: the engine's
    # agreement with the oracle does not depend on the template.
    template = FAMILY_TEMPLATE.get(request.param, "chatml")
    adapter = make_adapter(request.param, template=template, n_layers=N_LAYERS)
    chat = build_chat_format(adapter.tokenizer)
    harmful, _ = builtin_prompts("harmful")
    harmless, _ = builtin_prompts("harmless")
    h = split_prompts(harmful, 12, 7, 1, seed=3, label="harmful")
    b = split_prompts(harmless, 12, 7, 1, seed=3, label="harmless")

    def batches(prompts):
        return encode_batches(chat, prompts, 4, adapter.device)  # several batches, ragged last

    candidates = compute_candidates(
        adapter, batches(h.train), batches(b.train), chat.n_post_instruction
    )
    return adapter, candidates, batches(h.val), batches(b.val)


# Every way the engine can spend compute must give the oracle's answer: the defaults (candidates
# batched into one forward, prompts packed where the model allows it), one candidate per padded
# forward (no batching, no packing), and small packed rows and budgets (several rows per class,
# several candidate groups per start layer).
OPTIONS = {
    "default": EngineOptions(),
    "one-per-forward": EngineOptions(tokens_per_forward=0, pack_prompts=False),
    "small-rows": EngineOptions(tokens_per_forward=300, packed_row_tokens=90),
}


@pytest.fixture(scope="module")
def oracle_scores(setup):
    """The oracle's scores for every candidate, computed once per (steering, L_low)."""
    adapter, candidates, harmful_val, harmless_val = setup
    cache = {}

    def scores(steering, l_low):
        if (steering, l_low) not in cache:
            cache[(steering, l_low)] = cosmic_oracle_scores(
                adapter, candidates, l_low, harmful_val, harmless_val, steering=steering
            )
        return cache[(steering, l_low)]

    return scores


@pytest.mark.parametrize("options", list(OPTIONS.values()), ids=list(OPTIONS))
@pytest.mark.parametrize("steering", ["lce", "ace"])
@pytest.mark.parametrize("l_low", [(3, 4), (1, 2), (5,)])
def test_engine_matches_oracle(setup, oracle_scores, steering, l_low, options):
    adapter, candidates, harmful_val, harmless_val = setup
    oracle = oracle_scores(steering, l_low)
    # A threshold that rejects the best-scoring candidates exercises the lazy KL order (the zero
    # directions, KL 0, are dropped before it by both).
    cutoff = math.floor(0.8 * N_LAYERS)
    allowed = oracle.kl[:, :cutoff][~oracle.zero[:, :cutoff]].sort().values
    threshold = float(allowed[len(allowed) // 2 - 1 : len(allowed) // 2 + 1].mean())
    pick = cosmic_oracle_pick(oracle, kl_threshold=threshold)
    settings = CosmicSettings(steering=steering, kl_threshold=threshold)
    layers = EvaluationLayers(l_low, tuple(0.0 for _ in range(N_LAYERS)), "test")
    engine = CosmicEngine(
        adapter, candidates, layers, settings, harmful_val, harmless_val, options=options
    )
    outcome = engine.run()

    assert (outcome.selected.position, outcome.selected.layer) == pick
    for record in outcome.records:
        p, l = record.position, record.layer
        if math.isnan(record.s_comply):  # only what the layer filter drops may go unscored
            assert l >= cutoff and p == -1
            continue
        assert record.s_comply == pytest.approx(float(oracle.s_comply[p, l]), abs=1e-6)
        assert record.s_refuse == pytest.approx(float(oracle.s_refuse[p, l]), abs=1e-6)
        if not math.isnan(record.kl):
            assert record.kl == pytest.approx(float(oracle.kl[p, l]), rel=1e-4, abs=1e-6)
    assert outcome.selected.kl <= threshold
    assert [r.status == "zero" for r in outcome.records] == oracle.zero.flatten().tolist()
    # The engine does strictly less work than the oracle's full forwards.
    oracle_blocks = oracle.prompt_forwards * N_LAYERS
    assert engine.work.block_forwards < oracle_blocks
    packs = options.pack_prompts and adapter.name.split("-")[1] != "gemma2"
    assert engine.forwards.layout == ("packed" if packs else "padded")


def test_batching_and_packing_cut_forwards_and_tokens(setup):
    adapter, candidates, harmful_val, harmless_val = setup
    layers = EvaluationLayers((3, 4), tuple(0.0 for _ in range(N_LAYERS)), "test")
    settings = CosmicSettings(kl_threshold=1e9)
    work = {}
    for name in ("default", "one-per-forward"):
        engine = CosmicEngine(
            adapter, candidates, layers, settings, harmful_val, harmless_val, OPTIONS[name]
        )
        engine.run()
        work[name] = engine.work
    assert work["default"].forwards < work["one-per-forward"].forwards / 3
    if adapter.name.split("-")[1] != "gemma2":  # its 6-token sliding window forbids packing
        assert work["default"].token_blocks < work["one-per-forward"].token_blocks


def test_every_candidate_filtered_names_the_filter(setup):
    adapter, candidates, harmful_val, harmless_val = setup
    layers = EvaluationLayers((3,), tuple(0.0 for _ in range(N_LAYERS)), "test")
    settings = CosmicSettings(prune_layer_fraction=0.95)  # keeps layers < floor(0.05 * 6) = 0
    engine = CosmicEngine(adapter, candidates, layers, settings, harmful_val, harmless_val)
    with pytest.raises(
        RefusalkitError, match=r"layer filter removed the most.*--prune-layer-fraction"
    ):
        engine.run()


def test_candidates_are_difference_of_means(setup):
    _, candidates, _, _ = setup
    assert candidates.directions.shape == (candidates.n_positions, N_LAYERS, 64)
    assert candidates.harmful_means.dtype == torch.float64
    torch.testing.assert_close(
        candidates.directions, candidates.harmful_means - candidates.harmless_means
    )


@pytest.mark.parametrize("steering", ["lce", "ace"])
def test_refusal_score_engine_matches_oracle(setup, steering):
    adapter, candidates, harmful_val, harmless_val = setup
    # Random tiny models have no refusal tokens of their own: use a few frequent ids as R.
    tokens = RefusalTokens((5, 17, 40), ("a", "b", "c"), ("test",))
    scores = refusal_score_oracle(
        adapter, candidates, tokens.ids, harmful_val, harmless_val, steering=steering,
        kl_threshold=1e9, induce_threshold=-1e9,
    )  # fmt: skip
    cutoff = math.floor(0.8 * N_LAYERS)
    real = ~scores.zero[:, :cutoff]  # the zero directions are dropped first, and not scored
    # Thresholds halfway between two observed values, so float noise cannot flip a decision.
    induces = scores.induce[:, :cutoff][real].sort().values
    induce_threshold = float(induces[len(induces) // 2 - 1 : len(induces) // 2 + 1].mean())
    kls = scores.kl[:, :cutoff][real].sort().values
    kl_threshold = float(kls[-4:-2].mean())
    oracle = refusal_score_oracle_pick(
        scores, kl_threshold=kl_threshold, induce_threshold=induce_threshold
    )
    settings = RefusalScoreSettings(
        steering=steering, kl_threshold=kl_threshold, induce_threshold=induce_threshold
    )
    for options in (OPTIONS["default"], OPTIONS["one-per-forward"]):
        engine = RefusalScoreEngine(
            adapter, candidates, settings, tokens, harmful_val, harmless_val, options
        )
        outcome = engine.run()
        selected = (outcome.selected.position, outcome.selected.layer)
        assert selected == (oracle.position, oracle.layer)
        for record in outcome.records:
            p, l = record.position, record.layer
            if scores.zero[p, l]:
                assert record.status == "zero" and math.isnan(record.bypass)
                continue
            if l >= cutoff:
                assert record.status == "layer" and math.isnan(record.bypass)
                continue
            assert record.bypass == pytest.approx(float(oracle.bypass[p, l]), abs=1e-5)
            assert record.induce == pytest.approx(float(oracle.induce[p, l]), abs=1e-5)
            if not math.isnan(record.kl):
                assert record.kl == pytest.approx(float(oracle.kl[p, l]), rel=1e-4, abs=1e-6)


def test_refusal_tokens_are_derived_from_the_tokenizer(setup):
    adapter, *_ = setup
    tokens = refusal_tokens(adapter.tokenizer)
    assert tokens.ids and len(tokens.ids) == len(set(tokens.ids))
    for phrase in tokens.phrases:
        first = adapter.tokenizer(phrase, add_special_tokens=False)["input_ids"][0]
        assert first in tokens.ids


def test_shared_prefix_leaves_every_prompt_its_last_token():
    assert shared_prefix_length([[1, 2, 3, 4], [1, 2, 3, 5], [1, 2, 9]]) == 2
    assert shared_prefix_length([[1, 2, 3], [1, 2, 3, 4]]) == 2  # one is a prefix of the other
    assert shared_prefix_length([[7], [7, 8]]) == 0
    assert shared_prefix_length([[1, 2], [3, 4]]) == 0


@pytest.mark.parametrize("family", ["llama", "qwen2"])
def test_packed_rows_give_the_padded_activations(family):
    adapter = make_adapter(family, n_layers=3)
    chat = build_chat_format(adapter.tokenizer)
    harmful, _ = builtin_prompts("harmful")
    prompts = [*harmful[:6], Prompt("x")]
    batches = encode_batches(chat, prompts, 3, adapter.device)
    packed = packed_chunks(batches, 120, adapter.dtype)
    assert len(packed) > 1 and all(c.inputs.input_ids.shape[0] == 1 for c in packed)
    assert sorted(i for c in packed for i in c.order) == list(range(len(prompts)))

    def last_tokens(chunks):
        readings = {}
        for chunk in chunks:
            out = forward(
                adapter, chunk.inputs, read_layers=[1, 2], positions=chunk.columns,
                logits=True, logit_columns=chunk.columns,
            )  # fmt: skip
            hidden = out.readings[2].reshape(-1, adapter.hidden_size)
            logits = out.column_logits.reshape(chunk.n_prompts, -1)
            for row, index in enumerate(chunk.order):
                readings[index] = torch.cat([hidden[row], logits[row]])
        return torch.stack([readings[i] for i in range(len(prompts))])

    torch.testing.assert_close(
        last_tokens(packed), last_tokens(padded_chunks(batches)), rtol=1e-4, atol=1e-4
    )


def test_zero_directions_are_scored_from_the_clean_pass(setup):
    """Layer 0 at the post-instruction tokens reads the same embedding for every prompt, so its
    direction is exactly zero: its interventions are identities and its scores the clean ones
    (the median-peak filter reads them), and the zero filter drops it."""
    adapter, candidates, harmful_val, harmless_val = setup
    identity = identity_candidates(candidates)
    assert identity[:, 0].all() and not identity[:, 1:].any()
    layers = EvaluationLayers((3, 4), tuple(0.0 for _ in range(N_LAYERS)), "test")
    engine = CosmicEngine(adapter, candidates, layers, CosmicSettings(), harmful_val, harmless_val)
    s_comply, s_refuse = engine.score_all()
    clean = cosine(engine.harmful_baseline, engine.harmless_baseline)
    assert (s_comply[:, 0] == clean).all() and (s_refuse[:, 0] == clean).all()
    assert engine.kl(-1, 0) == 0.0
    # They cannot be a refusal direction: the zero filter drops them, whatever their scores.
    settings = CosmicSettings(kl_threshold=math.inf)
    outcome = CosmicEngine(adapter, candidates, layers, settings, harmful_val, harmless_val).run()
    assert [r.status == "zero" for r in outcome.records] == identity.flatten().tolist()
    assert outcome.selected.layer > 0


# bfloat16 (the GPU default) on CPU: measured score differences engine vs oracle up to 3.0e-3 on
# these models (packing is accepted at 3e-2 relative error in half precision), so the bound is
# 5e-3; the picks agreed on all six (family, steering) pairs with two threads, and gemma2-ace
# picked a near-tie (oracle scores within the bound) with one.
BF16_SCORE_TOLERANCE = 5e-3


@pytest.mark.parametrize("steering", ["lce", "ace"])
@pytest.mark.parametrize("family", ["llama", "qwen2", "gemma2"])
def test_engine_matches_oracle_in_bfloat16(family, steering):
    adapter = make_adapter(family, n_layers=N_LAYERS)
    adapter.model.to(torch.bfloat16)
    chat = build_chat_format(adapter.tokenizer)
    h = split_prompts(builtin_prompts("harmful")[0], 12, 7, 1, seed=3, label="harmful")
    b = split_prompts(builtin_prompts("harmless")[0], 12, 7, 1, seed=3, label="harmless")

    def batches(prompts):
        return encode_batches(chat, prompts, 4, adapter.device)

    candidates = compute_candidates(
        adapter, batches(h.train), batches(b.train), chat.n_post_instruction
    )
    l_low = (3, 4)
    oracle = cosmic_oracle_scores(
        adapter, candidates, l_low, batches(h.val), batches(b.val), steering=steering
    )
    settings = CosmicSettings(steering=steering, kl_threshold=1e9)
    layers = EvaluationLayers(l_low, tuple(0.0 for _ in range(N_LAYERS)), "test")
    outcome = CosmicEngine(
        adapter, candidates, layers, settings, batches(h.val), batches(b.val)
    ).run()
    # The same pick, unless the oracle's best two are within the noise (then the engine's pick
    # must be one of them): with one thread the gemma2-ace pair measured such a near-tie.
    picked = (outcome.selected.position, outcome.selected.layer)
    best = cosmic_oracle_pick(oracle, kl_threshold=1e9)
    total = oracle.s_comply + oracle.s_refuse
    assert picked == best or abs(float(total[picked] - total[best])) <= 2 * BF16_SCORE_TOLERANCE
    for record in outcome.records:
        if not math.isnan(record.s_comply):
            p, l = record.position, record.layer
            assert abs(record.s_comply - float(oracle.s_comply[p, l])) <= BF16_SCORE_TOLERANCE
            assert abs(record.s_refuse - float(oracle.s_refuse[p, l])) <= BF16_SCORE_TOLERANCE


@pytest.mark.parametrize("steering", ["lce", "ace"])
@pytest.mark.parametrize("family", ["llama", "gemma2"])
def test_reference_l_low_convention_matches_hidden_states(family, steering):
    """``--l-low-convention reference`` (SPEC §3.1): L_low and the scores read block outputs,
    the last one after the final norm. The oracle reads the model's own ``hidden_states[1:]``
    (``output_hidden_states=True``), no refusalkit hook; L_low holds the last layer so the
    final-norm point is exercised."""
    adapter = make_adapter(family, n_layers=N_LAYERS)
    chat = build_chat_format(adapter.tokenizer)
    h = split_prompts(builtin_prompts("harmful")[0], 12, 7, 1, seed=3, label="harmful")
    b = split_prompts(builtin_prompts("harmless")[0], 12, 7, 1, seed=3, label="harmless")

    def batches(prompts):
        return encode_batches(chat, prompts, 4, adapter.device)

    positions = chat.n_post_instruction
    plain = compute_candidates(adapter, batches(h.train), batches(b.train), positions)
    candidates = compute_candidates(
        adapter, batches(h.train), batches(b.train), positions, final_norm=True
    )
    # The extra reading leaves the candidates themselves as they were.
    torch.testing.assert_close(candidates.harmful_means, plain.harmful_means)
    settings = CosmicSettings(
        steering=steering, kl_threshold=1e9, l_low_fraction=0.34, l_low_convention="reference"
    )
    expected_l_low, _ = l_low_oracle(
        adapter, batches(h.train), batches(b.train), fraction=0.34, convention="reference"
    )
    chosen = low_similarity_layers(*candidates.last_token_means("reference"), settings)
    assert chosen.layers == expected_l_low
    l_low = (2, N_LAYERS - 1)
    oracle = cosmic_oracle_scores(
        adapter, candidates, l_low, batches(h.val), batches(b.val),
        steering=steering, convention="reference",
    )  # fmt: skip
    layers = EvaluationLayers(l_low, tuple(0.0 for _ in range(N_LAYERS)), "test")
    engine = CosmicEngine(adapter, candidates, layers, settings, batches(h.val), batches(b.val))
    assert engine.forwards.read_layers == [3, N_LAYERS]
    outcome = engine.run()
    assert (outcome.selected.position, outcome.selected.layer) == cosmic_oracle_pick(
        oracle, kl_threshold=1e9
    )
    for record in outcome.records:
        if not math.isnan(record.s_comply):
            p, l = record.position, record.layer
            assert record.s_comply == pytest.approx(float(oracle.s_comply[p, l]), abs=1e-6)
            assert record.s_refuse == pytest.approx(float(oracle.s_refuse[p, l]), abs=1e-6)
    # The block-input convention reads other activations: the scores differ.
    block_input = CosmicEngine(
        adapter, plain, layers, replace(settings, l_low_convention="block-input"),
        batches(h.val), batches(b.val),
    ).run()  # fmt: skip
    assert any(
        abs(a.s_comply - b.s_comply) > 1e-4
        for a, b in zip(outcome.records, block_input.records, strict=True)
        if not math.isnan(a.s_comply)
    )


def test_block_input_candidates_cannot_read_the_reference_convention(setup):
    _, candidates, _, _ = setup
    with pytest.raises(RefusalkitError, match="final_norm=True"):
        candidates.last_token_means("reference")
