"""Edge cases handled by design, not crashes: few layers, zero directions, one post-instruction
token, every candidate filtered, and NaN activations, on tiny random models (tests/tiny.py)."""

from __future__ import annotations

import math
import re
from typing import Any

import pytest
import torch

from refusalkit import cli
from refusalkit.activations import EncodedBatch, encode_batches
from refusalkit.directions import CandidateSet, compute_candidates
from refusalkit.errors import RefusalkitError
from refusalkit.models.adapter import ModelAdapter
from refusalkit.prompts.chat import ChatFormat, build_chat_format
from refusalkit.prompts.datasets import builtin_prompts, split_prompts
from refusalkit.selection import cosmic, refusal_score
from refusalkit.selection.cosmic import (
    CosmicSettings,
    SelectionOutcome,
    low_similarity_layers,
    select,
)
from refusalkit.selection.engine import CosmicEngine, identity_candidates
from refusalkit.selection.filters import NothingSelected
from tests.tiny import ONE_TOKEN_SUFFIX_TEMPLATE, make_adapter

Batches = list[EncodedBatch]


def _class_batches(chat: ChatFormat, adapter: ModelAdapter, label: str) -> tuple[Batches, Batches]:
    """(train, val) batches of one class: 8 train and 6 val prompts, in batches of 4."""
    prompts, _ = builtin_prompts(label)
    split = split_prompts(prompts, 8, 6, 1, seed=3, label=label)
    return (
        encode_batches(chat, split.train, 4, adapter.device),
        encode_batches(chat, split.val, 4, adapter.device),
    )


def _data(adapter: ModelAdapter) -> tuple[CandidateSet, Batches, Batches]:
    """Candidates from the train prompts, and the harmful and harmless val batches."""
    chat = build_chat_format(adapter.tokenizer)
    harmful_train, harmful_val = _class_batches(chat, adapter, "harmful")
    harmless_train, harmless_val = _class_batches(chat, adapter, "harmless")
    candidates = compute_candidates(adapter, harmful_train, harmless_train, chat.n_post_instruction)
    return candidates, harmful_val, harmless_val


def _engine(
    adapter: ModelAdapter, data: tuple[CandidateSet, Batches, Batches], settings: CosmicSettings
) -> CosmicEngine:
    """The COSMIC engine as the pipeline builds it: L_low from the candidate means."""
    candidates, harmful_val, harmless_val = data
    layers = low_similarity_layers(
        candidates.harmful_means[-1], candidates.harmless_means[-1], settings
    )
    return CosmicEngine(adapter, candidates, layers, settings, harmful_val, harmless_val)


def _cosmic(
    adapter: ModelAdapter, data: tuple[CandidateSet, Batches, Batches], settings: CosmicSettings
) -> SelectionOutcome:
    return _engine(adapter, data, settings).run()


def _assert_valid_pick(
    outcome: SelectionOutcome, settings: CosmicSettings, candidates: CandidateSet
) -> None:
    """The pick passed every filter, and every candidate the zero or layer filter drops is
    marked so."""
    cutoff = settings.max_layer(candidates.n_layers)
    zero = identity_candidates(candidates)
    pick = outcome.selected
    assert [r for r in outcome.records if r.status == "selected"] == [pick]
    assert pick.layer < cutoff and pick.kl <= settings.kl_threshold
    assert math.isfinite(pick.score)
    assert bool(candidates.direction(pick.position, pick.layer).any())
    for record in outcome.records:
        if zero[record.position, record.layer]:
            assert record.status in ("zero", "median_peak")
        elif record.layer >= cutoff:
            assert record.status in ("layer", "median_peak")


# Every real candidate of a tiny random model moves the next-token distribution by more than the
# default KL threshold (0.1): tests that need a pick allow any drift.
ANY_KL = math.inf


# --- models with fewer than 10 layers ------------------------------------------------------------


def _means_with_similarities(similarities: list[float]) -> tuple[torch.Tensor, torch.Tensor]:
    """Class means at position -1 whose cosine at layer l is exactly similarities[l]."""
    harmless = torch.zeros(len(similarities), 4, dtype=torch.float64)
    harmless[:, 0] = 1.0
    harmful = torch.zeros(len(similarities), 4, dtype=torch.float64)
    for layer, c in enumerate(similarities):
        harmful[layer, 0], harmful[layer, 1] = c, math.sqrt(1 - c * c)
    return harmful, harmless


@pytest.mark.parametrize("second_half", [False, True], ids=["all-layers", "second-half"])
@pytest.mark.parametrize(
    "similarities",
    [[0.5], [0.3, 0.9], [0.2, 0.9, 0.6], [0.1, 0.95, 0.4, 0.8, 0.7, 0.9]],
    ids=["L1", "L2", "L3", "L6"],
)
def test_l_low_is_one_layer_on_models_with_fewer_than_10_layers(
    similarities: list[float], second_half: bool
) -> None:
    harmful, harmless = _means_with_similarities(similarities)
    settings = CosmicSettings(l_low_second_half=second_half)
    chosen = low_similarity_layers(harmful, harmless, settings)  # ⌊0.1·L⌋ = 0 layers
    n_layers = len(similarities)
    pool = range(n_layers // 2, n_layers) if second_half else range(n_layers)
    assert chosen.layers == (min(pool, key=lambda layer: similarities[layer]),)
    assert "single least similar" in chosen.note
    assert ("second half" in chosen.note) == second_half


def test_l_low_note_counts_the_layers_the_second_half_really_has() -> None:
    harmful, harmless = _means_with_similarities([0.1, 0.95, 0.4, 0.8, 0.7, 0.9])
    settings = CosmicSettings(l_low_second_half=True, l_low_fraction=1.0)  # ⌊1.0·6⌋ = 6 wanted
    chosen = low_similarity_layers(harmful, harmless, settings)
    assert chosen.layers == (3, 4, 5)
    assert chosen.note == "the 3 least similar of 3 layers (second half only)"


def test_cosmic_selects_on_a_model_with_three_layers() -> None:
    """⌊0.8·3⌋ = 2 keeps layers 0-1; layer 0 is all zero directions, so the pick is at layer 1."""
    adapter = make_adapter("llama", n_layers=3)
    data = _data(adapter)
    settings = CosmicSettings(kl_threshold=ANY_KL)
    outcome = _cosmic(adapter, data, settings)
    assert outcome.n_candidates == data[0].n_positions * 3
    _assert_valid_pick(outcome, settings, data[0])
    assert outcome.selected.layer == 1


def test_two_layer_model_names_the_zero_and_layer_filters() -> None:
    """⌊0.8·2⌋ = 1 keeps layer 0 only, and layer 0 reads the same template-token embedding in
    every prompt: each of its directions is exactly zero, an intervention that does nothing. The
    zero filter drops them (they would pass every filter of SPEC §3, with KL 0), the layer filter
    drops layer 1, and the message names the option that gives layer 1 back."""
    adapter = make_adapter("llama", n_layers=2)
    data = _data(adapter)
    n_positions = data[0].n_positions
    assert identity_candidates(data[0])[:, 0].all()
    with pytest.raises(NothingSelected) as info:
        _cosmic(adapter, data, CosmicSettings(kl_threshold=ANY_KL))
    message = str(info.value)
    statuses = [c.status for c in info.value.candidates]
    assert statuses.count("zero") == n_positions  # layer 0
    assert statuses.count("layer") + statuses.count("median_peak") == n_positions  # layer 1
    assert f"zero: {n_positions}, layer: {statuses.count('layer')})" in message
    assert "the layer filter removed the most besides the zero filter" in message
    assert message.endswith("--prune-layer-fraction")
    # With no layer pruned, the pick is a real direction at layer 1.
    settings = CosmicSettings(kl_threshold=ANY_KL, prune_layer_fraction=0.0)
    outcome = _cosmic(adapter, data, settings)
    _assert_valid_pick(outcome, settings, data[0])
    assert outcome.selected.layer == 1


def test_one_layer_model_names_the_zero_filter() -> None:
    """A one-layer model has only layer 0, whose directions are all exactly zero: the zero filter
    (which runs before the layer filter, ⌊0.8·1⌋ = 0) drops every candidate and says why."""
    adapter = make_adapter("llama", n_layers=1)
    data = _data(adapter)
    n_positions = data[0].n_positions
    for settings in (CosmicSettings(), CosmicSettings(prune_layer_fraction=0.0)):
        with pytest.raises(NothingSelected) as info:
            _cosmic(adapter, data, settings)
        message = str(info.value)
        counts = f"{n_positions} candidates was filtered out (zero: {n_positions})"
        assert counts in message
        assert "the zero filter removed the most — their directions are exactly zero" in message
        assert {c.status for c in info.value.candidates} == {"zero"}


def test_kl_threshold_0_leaves_no_candidate() -> None:
    """Every real direction changes the next-token distribution (KL > 0); only the zero
    directions have KL 0, and the zero filter drops them: nothing is selected and the message
    names the KL filter (a zero direction used to be the pick)."""
    adapter = make_adapter("llama", n_layers=4)
    data = _data(adapter)
    with pytest.raises(NothingSelected) as info:
        _cosmic(adapter, data, CosmicSettings(kl_threshold=0.0))
    message = str(info.value)
    statuses = [c.status for c in info.value.candidates]
    assert "selected" not in statuses and statuses.count("zero") == data[0].n_positions
    assert f"kl: {statuses.count('kl')}" in message and statuses.count("kl") > 0
    assert "the kl filter removed the most — " in message and "--kl-threshold" in message
    # Every real candidate the lazy KL pass reached moved the distribution.
    assert all(c.kl > 0 for c in info.value.candidates if c.status == "kl")


# --- one post-instruction token ------------------------------------------------------------------


def test_one_post_instruction_token_skips_the_median_peak_filter() -> None:
    adapter = make_adapter("llama", "chatml", n_layers=4)
    adapter.tokenizer.chat_template = ONE_TOKEN_SUFFIX_TEMPLATE
    chat = build_chat_format(adapter.tokenizer)
    assert chat.n_post_instruction == 1 and chat.suffix_text == "<|im_end|>"
    # The median-peak filter is on, and must step aside at P = 1.
    settings = CosmicSettings(kl_threshold=ANY_KL)
    data = _data(adapter)
    outcome = _cosmic(adapter, data, settings)
    assert outcome.median_layers == {"ablation": None, "addition": None}
    assert [(r.position, r.layer) for r in outcome.records] == [(-1, layer) for layer in range(4)]
    assert not any(r.status == "median_peak" for r in outcome.records)
    _assert_valid_pick(outcome, settings, data[0])


# --- every candidate filtered --------------------------------------------------------------------


def _run_options(capsys: pytest.CaptureFixture[str]) -> set[str]:
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args(["run", "--help"])
    return set(re.findall(r"--[a-z][a-z0-9-]*", capsys.readouterr().out))


def test_every_filter_hint_names_an_existing_option(capsys: pytest.CaptureFixture[str]) -> None:
    options = _run_options(capsys)
    for hints in (cosmic.FILTER_HINTS, refusal_score.FILTER_HINTS):
        for name, hint in hints.items():
            named = set(re.findall(r"--[a-z][a-z0-9-]*", hint))
            assert named, f"the {name} hint names no option"
            assert named <= options, f"the {name} hint names {named - options}"


NAN = math.nan


def _all_filtered_by(case: str) -> tuple[torch.Tensor, torch.Tensor, CosmicSettings, float]:
    """Scores [P = 2, L = 10], settings and a constant KL under which ``case`` filters most."""
    comply = torch.linspace(0, 1, 20, dtype=torch.float64).reshape(2, 10)
    refuse = comply.clone()
    if case == "kl":  # layer: 4 (layers 8, 9), kl: 16
        return comply, refuse, CosmicSettings(kl_threshold=0.0, median_peak_filter=False), 0.5
    if case == "layer":  # ⌊0.05·10⌋ = 0: layer: 20
        return comply, refuse, CosmicSettings(prune_layer_fraction=0.95), 0.0
    # Position -2 peaks at layer 0 and is NaN elsewhere: median_peak: 9 (position -1, layers
    # 1-9), nan: 7, layer: 2, kl: 2 (layer 0).
    comply[0, 1:] = refuse[0, 1:] = NAN
    comply[0, 0] = refuse[0, 0] = 10.0
    return comply, refuse, CosmicSettings(), 0.5


@pytest.mark.parametrize(
    ("case", "option"),
    [
        ("kl", "--kl-threshold"),
        ("layer", "--prune-layer-fraction"),
        ("median_peak", "--no-median-peak-filter"),
    ],
)
def test_every_candidate_filtered_names_the_filter_and_option(case: str, option: str) -> None:
    comply, refuse, settings, kl = _all_filtered_by(case)
    with pytest.raises(NothingSelected) as info:
        select(comply, refuse, settings, lambda _p, _l: kl)
    message = str(info.value)
    assert message.startswith("COSMIC: every one of the 20 candidates was filtered out")
    assert f"the {case} filter removed the most" in message and option in message
    assert len(info.value.candidates) == 20  # kept for the report


def test_every_candidate_filtered_on_a_model_names_the_filter() -> None:
    """Through the engine: a prune fraction that leaves no layer at all."""
    adapter = make_adapter("qwen2", n_layers=4)
    with pytest.raises(NothingSelected, match=r"the layer filter removed the most.*--prune-layer"):
        _cosmic(adapter, _data(adapter), CosmicSettings(prune_layer_fraction=0.9))


# --- non-finite activations ----------------------------------------------------------------------


def _poison(parameter: torch.Tensor) -> None:
    with torch.no_grad():
        parameter.fill_(math.nan)


def test_nan_embeddings_are_named_at_block_0() -> None:
    adapter = make_adapter("llama", n_layers=4)
    _poison(adapter.model.get_input_embeddings().weight)
    with pytest.raises(RefusalkitError) as info:
        _data(adapter)
    message = str(info.value)
    assert "at the input of block 0 (position" in message
    assert "harmful train prompts: the token embeddings are not finite" in message
    assert "--dtype float32" in message


@pytest.mark.parametrize("block", [0, 2])
def test_nan_weights_in_a_block_are_named_when_computing_candidates(block: int) -> None:
    adapter = make_adapter("llama", n_layers=4)
    _poison(adapter.mlp_modules[block].down_proj.weight)
    with pytest.raises(RefusalkitError) as info:
        _data(adapter)
    message = str(info.value)
    # Every token is NaN after the block: the first position, -P, is the one reported.
    assert re.search(rf"at the input of block {block + 1} \(position -\d+\)", message)
    assert f"the output of block {block} is not finite" in message
    assert "--dtype float32" in message


def test_nan_in_the_clean_validation_pass_is_named() -> None:
    """Candidates from a sound model, then a block breaks: the engine's clean pass says where."""
    adapter = make_adapter("llama", n_layers=4)
    data = _data(adapter)
    _poison(adapter.mlp_modules[1].down_proj.weight)
    with pytest.raises(RefusalkitError) as info:
        _cosmic(adapter, data, CosmicSettings())
    message = str(info.value)
    assert "at the input of block 2 (the prompts' last token) on the harmful val prompts" in message
    assert "the output of block 1 is not finite" in message


def test_nan_after_the_last_block_read_is_named_from_the_logits() -> None:
    """No block input shows a NaN made by the last block: the clean logits do."""
    adapter = make_adapter("llama", n_layers=4)
    _poison(adapter.mlp_modules[3].down_proj.weight)
    data = _data(adapter)  # the inputs of blocks 0-3 are all finite
    with pytest.raises(RefusalkitError) as info:
        _cosmic(adapter, data, CosmicSettings())
    message = str(info.value)
    assert "non-finite logits (NaN/inf) at the last token of the harmless val prompts" in message
    assert "inputs of blocks 0..3 are finite: block 3 or a later one" in message


def test_nan_under_one_candidate_is_dropped_by_the_nan_filter() -> None:
    """A NaN that only an intervention makes belongs to that candidate: the NaN filter drops
    it and the selection goes on, with every other candidate scored as before."""
    adapter = make_adapter("llama", n_layers=6)
    candidates, harmful_val, harmless_val = _data(adapter)
    settings = CosmicSettings(kl_threshold=math.inf)
    clean = _cosmic(adapter, (candidates, harmful_val, harmless_val), settings)
    broken_means = candidates.harmful_means.clone()
    broken_means[-2, 2] = math.inf  # its unit direction is NaN: so are its interventions
    broken = CandidateSet(broken_means, candidates.harmless_means)
    outcome = _cosmic(adapter, (broken, harmful_val, harmless_val), settings)
    by_key = {(r.position, r.layer): r for r in clean.records}
    for record in outcome.records:
        if (record.position, record.layer) == (-2, 2):
            # Ablation acts at every layer, so S_comply is NaN; S_refuse is NaN too unless L_low
            # is before layer 2, where the addition changes nothing.
            assert math.isnan(record.s_comply) and record.status == "nan"
            continue
        before = by_key[(record.position, record.layer)]
        assert record.s_comply == pytest.approx(before.s_comply, abs=1e-6, nan_ok=True)
        assert record.s_refuse == pytest.approx(before.s_refuse, abs=1e-6, nan_ok=True)
    assert math.isfinite(outcome.selected.score)


def test_a_non_finite_packed_pass_falls_back_to_padding() -> None:
    """The padded clean pass is sound, the packed one (all prompts in one row) is not: the
    engine keeps the padded layout instead of failing or scoring with NaN."""
    adapter = make_adapter("llama", n_layers=4)
    data = _data(adapter)

    def nan_in_single_rows(
        _module: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        hidden = args[0] if args else kwargs["hidden_states"]
        if hidden.shape[0] > 1:  # padded batches and candidate copies have several rows
            return None
        nan = torch.full_like(hidden, math.nan)
        return ((nan, *args[1:]), kwargs) if args else (args, {**kwargs, "hidden_states": nan})

    handle = adapter.layers[1].register_forward_pre_hook(nan_in_single_rows, with_kwargs=True)
    try:
        engine = _engine(adapter, data, CosmicSettings(kl_threshold=ANY_KL))
        outcome = engine.run()
    finally:
        handle.remove()
    assert engine.forwards.layout == "padded"
    assert engine.forwards.layout_note == "padded: packed clean pass is not finite"
    assert not any(r.status == "nan" for r in outcome.records)
    assert math.isfinite(outcome.selected.score) and outcome.selected.status == "selected"
