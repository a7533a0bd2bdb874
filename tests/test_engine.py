"""The fast COSMIC engine against the straightforward oracle (tests/oracle.py) on tiny models."""

from __future__ import annotations

import math

import pytest
import torch

from refusalkit.activations import encode_batches
from refusalkit.directions import compute_candidates
from refusalkit.errors import RefusalkitError
from refusalkit.prompts.chat import build_chat_format
from refusalkit.prompts.datasets import builtin_prompts, split_prompts
from refusalkit.selection.cosmic import CosmicSettings, EvaluationLayers
from refusalkit.selection.engine import CosmicEngine, RefusalScoreEngine
from refusalkit.selection.refusal_score import RefusalScoreSettings, RefusalTokens, refusal_tokens
from tests.oracle import cosmic_oracle, refusal_score_oracle
from tests.tiny import make_adapter

N_LAYERS = 6


@pytest.fixture(scope="module", params=["llama", "qwen2", "gemma2"])
def setup(request):
    adapter = make_adapter(request.param, n_layers=N_LAYERS)
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


@pytest.mark.parametrize("steering", ["lce", "ace"])
@pytest.mark.parametrize("l_low", [(3, 4), (1, 2), (5,)])
def test_engine_matches_oracle(setup, steering, l_low):
    adapter, candidates, harmful_val, harmless_val = setup
    oracle = cosmic_oracle(
        adapter, candidates, l_low, harmful_val, harmless_val, steering=steering, kl_threshold=1e9
    )
    # A threshold that rejects the best-scoring candidates exercises the lazy KL order.
    cutoff = math.floor(0.8 * N_LAYERS)
    allowed = oracle.kl[:, :cutoff].flatten().sort().values
    threshold = float(allowed[len(allowed) // 2 - 1 : len(allowed) // 2 + 1].mean())
    oracle = cosmic_oracle(
        adapter, candidates, l_low, harmful_val, harmless_val, steering=steering,
        kl_threshold=threshold,
    )  # fmt: skip
    settings = CosmicSettings(steering=steering, kl_threshold=threshold)
    layers = EvaluationLayers(l_low, tuple(0.0 for _ in range(N_LAYERS)), "test")
    engine = CosmicEngine(adapter, candidates, layers, settings, harmful_val, harmless_val)
    outcome = engine.run()

    assert (outcome.selected.position, outcome.selected.layer) == (oracle.position, oracle.layer)
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
    # The engine does strictly less work than the oracle's full forwards.
    oracle_blocks = oracle.prompt_forwards * N_LAYERS
    assert engine.work.block_forwards < oracle_blocks


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
    oracle = refusal_score_oracle(
        adapter, candidates, tokens.ids, harmful_val, harmless_val, steering=steering,
        kl_threshold=1e9, induce_threshold=-1e9,
    )  # fmt: skip
    cutoff = math.floor(0.8 * N_LAYERS)
    # Thresholds halfway between two observed values, so float noise cannot flip a decision.
    induces = oracle.induce[:, :cutoff].flatten().sort().values
    induce_threshold = float(induces[len(induces) // 2 - 1 : len(induces) // 2 + 1].mean())
    kls = oracle.kl[:, :cutoff].flatten().sort().values
    kl_threshold = float(kls[-4:-2].mean())
    oracle = refusal_score_oracle(
        adapter, candidates, tokens.ids, harmful_val, harmless_val, steering=steering,
        kl_threshold=kl_threshold, induce_threshold=induce_threshold,
    )  # fmt: skip
    settings = RefusalScoreSettings(
        steering=steering, kl_threshold=kl_threshold, induce_threshold=induce_threshold
    )
    engine = RefusalScoreEngine(adapter, candidates, settings, tokens, harmful_val, harmless_val)
    outcome = engine.run()
    assert (outcome.selected.position, outcome.selected.layer) == (oracle.position, oracle.layer)
    for record in outcome.records:
        p, l = record.position, record.layer
        if l >= cutoff:
            assert record.status == "layer" and math.isnan(record.bypass)
            continue
        assert record.bypass == pytest.approx(float(oracle.bypass[p, l]), abs=1e-5)
        assert record.induce == pytest.approx(float(oracle.induce[p, l]), abs=1e-5)


def test_refusal_tokens_are_derived_from_the_tokenizer(setup):
    adapter, *_ = setup
    tokens = refusal_tokens(adapter.tokenizer)
    assert tokens.ids and len(tokens.ids) == len(set(tokens.ids))
    for phrase in tokens.phrases:
        first = adapter.tokenizer(phrase, add_special_tokens=False)["input_ids"][0]
        assert first in tokens.ids
