"""The pure selection steps (SPEC §3-4): evaluation layers and the candidate filters."""

from __future__ import annotations

import math

import pytest
import torch

from refusalkit.errors import RefusalkitError
from refusalkit.selection.cosmic import (
    CosmicSettings,
    aggregate,
    cosine,
    low_similarity_layers,
    lower_median,
    peak_layers,
    select,
)
from refusalkit.selection.filters import NothingSelected
from refusalkit.selection.refusal_score import RefusalScoreSettings, select_by_refusal_score

NAN = math.nan


class KL:
    """A KL callback that records its calls; ``values`` maps (position, layer) to a KL."""

    def __init__(self, values: dict[tuple[int, int], float] | None = None, default: float = 0.0):
        self.values = values or {}
        self.default = default
        self.calls: list[tuple[int, int]] = []

    def __call__(self, position: int, layer: int) -> float:
        self.calls.append((position, layer))
        return self.values.get((position, layer), self.default)


def _scores(
    n_positions: int, n_layers: int, base: float = 0.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Low, distinct, all-finite scores; tests raise the cells they care about."""
    grid = torch.arange(n_positions * n_layers, dtype=torch.float64).reshape(n_positions, n_layers)
    small = base + grid * 1e-4
    return small.clone(), small.clone()


def _status(outcome, position: int, layer: int) -> str:
    (record,) = [r for r in outcome.records if (r.position, r.layer) == (position, layer)]
    return record.status


def _peaks_at(row: torch.Tensor, layer: int, value: float = 1.0) -> None:
    row[layer] = value


# --- helpers -------------------------------------------------------------------------------------


def test_lower_median_and_peaks() -> None:
    assert lower_median([2, 6]) == 2
    assert lower_median([6, 2, 4]) == 4
    assert lower_median([1, 9, 3, 7]) == 3
    scores = torch.tensor([[0.1, NAN, 0.3], [NAN, NAN, NAN], [0.5, 0.2, NAN]])
    assert peak_layers(scores)[0] == 2 and peak_layers(scores)[2] == 0


def test_max_layer_is_floor_of_0_8_l() -> None:
    settings = CosmicSettings()
    for n_layers in (1, 4, 5, 10, 16, 26, 28, 32, 42, 80):
        assert settings.max_layer(n_layers) == math.floor(0.8 * n_layers + 1e-9)
    assert settings.max_layer(5) == 4  # (1 - 0.2)·5 in floating point must still give 4
    assert settings.max_layer(10) == 8
    assert CosmicSettings(prune_layer_fraction=0.0).max_layer(10) == 10


@pytest.mark.parametrize(
    "kwargs",
    [
        {"steering": "x"},
        {"aggregation": "sum"},
        {"l_low_fraction": 0.0},
        {"l_low_fraction": 1.5},
        {"prune_layer_fraction": 1.0},
        {"kl_threshold": -1.0},
    ],
)
def test_invalid_settings(kwargs) -> None:
    with pytest.raises(RefusalkitError):
        CosmicSettings(**kwargs)


# --- median-peak filter --------------------------------------------------------------------------


def _median_case() -> tuple[torch.Tensor, torch.Tensor]:
    """P = 3, L = 10. Other positions peak at layers 2 and 6 (S_comply; lower median 2) and 3 and
    7 (S_refuse; lower median 3)."""
    comply, refuse = _scores(3, 10)
    _peaks_at(comply[0], 2)
    _peaks_at(comply[1], 6)
    _peaks_at(refuse[0], 3)
    _peaks_at(refuse[1], 7)
    return comply, refuse


def test_median_peak_drops_late_last_position_candidates() -> None:
    comply, refuse = _median_case()
    comply[2, 5] = refuse[2, 5] = 5.0  # the best overall, but later than both medians
    comply[2, 3] = refuse[2, 3] = 2.0  # later than m_abl = 2 but not than m_add = 3: kept
    kl = KL()
    outcome = select(comply, refuse, CosmicSettings(), kl)
    assert outcome.median_layers == {"ablation": 2, "addition": 3}
    for layer in range(10):
        expected = "median_peak" if layer > 3 else None
        if expected:
            assert _status(outcome, -1, layer) == expected
        else:
            assert _status(outcome, -1, layer) != "median_peak"
    assert (outcome.selected.position, outcome.selected.layer) == (-1, 3)
    assert kl.calls == [(-1, 3)]
    # Other positions are never touched by the median-peak filter.
    assert not any(r.status == "median_peak" for r in outcome.records if r.position != -1)


def test_median_peak_uses_the_lower_median() -> None:
    """With peaks at 2 and 6 the lower median is 2 (the mean would be 4, the upper median 6)."""
    comply, refuse = _scores(3, 10)
    _peaks_at(comply[0], 2)
    _peaks_at(comply[1], 6)
    _peaks_at(refuse[0], 2)
    _peaks_at(refuse[1], 6)
    comply[2, 3] = refuse[2, 3] = 5.0
    outcome = select(comply, refuse, CosmicSettings(), KL())
    assert outcome.median_layers == {"ablation": 2, "addition": 2}
    assert _status(outcome, -1, 3) == "median_peak"
    assert _status(outcome, -1, 2) != "median_peak"
    # (-3, 2) and (-2, 6) tie at 2.0: the earlier position (and layer) wins.
    assert (outcome.selected.position, outcome.selected.layer) == (-3, 2)


def test_median_peak_keeps_last_position_candidates_when_early() -> None:
    comply, refuse = _median_case()
    comply[2, 1] = refuse[2, 1] = 5.0  # before both medians
    outcome = select(comply, refuse, CosmicSettings(), KL())
    assert (outcome.selected.position, outcome.selected.layer) == (-1, 1)


def test_median_peak_filter_can_be_disabled() -> None:
    comply, refuse = _median_case()
    comply[2, 5] = refuse[2, 5] = 5.0
    outcome = select(comply, refuse, CosmicSettings(median_peak_filter=False), KL())
    assert (outcome.selected.position, outcome.selected.layer) == (-1, 5)
    assert outcome.median_layers == {"ablation": None, "addition": None}
    assert not any(r.status == "median_peak" for r in outcome.records)


def test_single_position_skips_the_median_peak_filter() -> None:
    comply, refuse = _scores(1, 10)
    comply[0, 7] = refuse[0, 7] = 5.0  # the last layer the layer filter allows (8 = ⌊0.8·10⌋)
    outcome = select(comply, refuse, CosmicSettings(), KL())
    assert outcome.median_layers == {"ablation": None, "addition": None}
    assert (outcome.selected.position, outcome.selected.layer) == (-1, 7)
    assert not any(r.status == "median_peak" for r in outcome.records)


# --- layer, NaN and KL filters -------------------------------------------------------------------


@pytest.mark.parametrize(("n_layers", "cutoff"), [(10, 8), (5, 4), (7, 5), (32, 25)])
def test_layer_filter(n_layers: int, cutoff: int) -> None:
    comply, refuse = _scores(2, n_layers)
    comply[:, cutoff:] = refuse[:, cutoff:] = 9.0  # the best scores are all too late
    outcome = select(comply, refuse, CosmicSettings(median_peak_filter=False), KL())
    for record in outcome.records:
        assert (record.status == "layer") == (record.layer >= cutoff)
    assert outcome.selected.layer == cutoff - 1
    assert outcome.n_kept == 2 * cutoff


def test_nan_candidates_are_dropped_and_never_evaluated() -> None:
    comply, refuse = _scores(2, 10)
    comply[0, 1] = NAN
    refuse[1, 2] = NAN
    comply[1, 3] = refuse[1, 3] = 5.0
    comply[0, 4] = NAN
    refuse[0, 4] = 50.0  # NaN + anything is NaN: never the pick
    kl = KL()
    outcome = select(comply, refuse, CosmicSettings(median_peak_filter=False), kl)
    assert _status(outcome, -2, 1) == "nan"
    assert _status(outcome, -1, 2) == "nan"
    assert _status(outcome, -2, 4) == "nan"
    assert (outcome.selected.position, outcome.selected.layer) == (-1, 3)
    assert all(not math.isnan(comply[p + 2, layer] + refuse[p + 2, layer]) for p, layer in kl.calls)
    ranking = outcome.ranking()
    assert (ranking[0].position, ranking[0].layer) == (-1, 3)
    assert all(math.isnan(r.score) for r in ranking[-3:])


def test_kl_is_evaluated_lazily_in_score_order() -> None:
    comply, refuse = _scores(2, 10)
    comply[0, 0] = refuse[0, 0] = 5.0  # best: KL too high
    comply[1, 1] = refuse[1, 1] = 4.0  # second: KL is NaN (treated as failing)
    comply[0, 2] = refuse[0, 2] = 3.0  # third: passes (KL == threshold is allowed)
    comply[1, 3] = refuse[1, 3] = 2.0  # fourth: would pass, never evaluated
    kl = KL({(-2, 0): 0.5, (-1, 1): NAN, (-2, 2): 0.1, (-1, 3): 0.0}, default=0.0)
    outcome = select(comply, refuse, CosmicSettings(median_peak_filter=False), kl)
    assert kl.calls == [(-2, 0), (-1, 1), (-2, 2)]
    assert (outcome.selected.position, outcome.selected.layer) == (-2, 2)
    assert outcome.selected.status == "selected" and outcome.selected.kl == 0.1
    assert _status(outcome, -2, 0) == "kl" and _status(outcome, -1, 1) == "kl"
    assert _status(outcome, -1, 3) == "not_needed"
    not_evaluated = [r for r in outcome.records if r.status == "not_needed"]
    assert len(not_evaluated) == 2 * 8 - 3
    assert all(math.isnan(r.kl) for r in not_evaluated)
    assert outcome.n_candidates == 20 and outcome.n_kept == 16


def test_score_ties_break_towards_the_earlier_position_then_layer() -> None:
    """Position-major, as the reference's argmax over its [position, layer] table (issue 14):
    (-2, 6) beats (-1, 4) on an exact tie although its layer is later."""
    comply, refuse = (
        torch.zeros(2, 10, dtype=torch.float64),
        torch.zeros(2, 10, dtype=torch.float64),
    )
    comply[0, 6] = comply[1, 4] = 1.0
    outcome = select(comply, refuse, CosmicSettings(median_peak_filter=False), KL())
    assert (outcome.selected.position, outcome.selected.layer) == (-2, 6)


def test_score_ties_break_towards_the_candidate_earlier_in_both() -> None:
    comply, refuse = (
        torch.zeros(2, 10, dtype=torch.float64),
        torch.zeros(2, 10, dtype=torch.float64),
    )
    comply[1, 6] = comply[0, 4] = 1.0
    kl = KL()
    outcome = select(comply, refuse, CosmicSettings(median_peak_filter=False), kl)
    assert kl.calls == [(-2, 4)]
    assert (outcome.selected.position, outcome.selected.layer) == (-2, 4)


def test_outcome_records_cover_every_candidate_in_order() -> None:
    comply, refuse = _median_case()
    outcome = select(comply, refuse, CosmicSettings(), KL())
    assert [(r.position, r.layer) for r in outcome.records] == [
        (p, layer) for p in (-3, -2, -1) for layer in range(10)
    ]
    record = outcome.records[0]
    assert record.as_dict()["score"] == pytest.approx(record.s_comply + record.s_refuse)


# --- zero filter ---------------------------------------------------------------------------------


def _layer_0_zero(n_positions: int, n_layers: int) -> torch.Tensor:
    """The zero mask of a real model: layer 0 at every post-instruction position."""
    zero = torch.zeros(n_positions, n_layers, dtype=torch.bool)
    zero[:, 0] = True
    return zero


def test_zero_candidates_are_never_picked_even_with_the_best_score() -> None:
    comply, refuse = _scores(2, 10)
    comply[:, 0] = refuse[:, 0] = 5.0  # the best scores, at the zero directions (KL 0 passes)
    comply[1, 3] = refuse[1, 3] = 1.0
    kl = KL()
    settings = CosmicSettings(median_peak_filter=False)
    outcome = select(comply, refuse, settings, kl, zero=_layer_0_zero(2, 10))
    assert (outcome.selected.position, outcome.selected.layer) == (-1, 3)
    assert _status(outcome, -2, 0) == "zero" and _status(outcome, -1, 0) == "zero"
    assert kl.calls == [(-1, 3)]  # KL is never asked of a zero candidate
    assert all(math.isnan(r.kl) for r in outcome.records if r.status == "zero")
    # Only the zero filter's candidates differ from the run without it.
    assert outcome.n_kept == 2 * 8 - 2
    plain = select(comply, refuse, settings, KL())
    assert (plain.selected.position, plain.selected.layer) == (-2, 0)
    assert plain.n_kept == 2 * 8


def test_zero_candidates_still_count_for_the_median_peak_filter() -> None:
    """The zero candidates' scores are real (the clean ones): position -2 peaks at its zero
    candidate, layer 0, so both medians are 0 and the median-peak filter drops position -1's
    layers 1-9, as it does without the zero filter."""
    comply, refuse = _scores(2, 10)
    comply[0, 0] = refuse[0, 0] = 5.0
    zero = _layer_0_zero(2, 10)
    outcome = select(comply, refuse, CosmicSettings(), KL(), zero=zero)
    assert outcome.median_layers == {"ablation": 0, "addition": 0}
    assert [r.layer for r in outcome.records if r.status == "median_peak"] == list(range(1, 10))
    assert (outcome.selected.position, outcome.selected.layer) == (-2, 7)
    with pytest.raises(NothingSelected) as info:
        select(comply, refuse, CosmicSettings(), KL(default=1.0), zero=zero)
    message = str(info.value)
    assert "(median_peak: 9, zero: 2, layer: 2, kl: 7)" in message
    assert "the median_peak filter removed the most" in message


def test_zero_filter_runs_before_the_layer_filter() -> None:
    """On a one-layer model every candidate is a zero direction at layer 0 ≥ ⌊0.8·1⌋ = 0: the
    zero filter names the real reason (no later layer could help)."""
    comply, refuse = _scores(3, 1)
    with pytest.raises(NothingSelected) as info:
        select(comply, refuse, CosmicSettings(), KL(), zero=_layer_0_zero(3, 1))
    message = str(info.value)
    assert "filtered out (zero: 3)" in message
    assert "the zero filter removed the most — their directions are exactly zero" in message
    assert "besides" not in message
    assert {c.status for c in info.value.candidates} == {"zero"}


def test_zero_and_layer_filters_on_a_two_layer_model() -> None:
    """⌊0.8·2⌋ = 1: the layer filter drops layer 1, the zero filter layer 0. No option relaxes
    the zero filter, so the message gives both counts, explains the zero filter and names the
    layer filter's option, which gives layer 1 back; with it, the KL filter is the one named."""
    comply, refuse = _scores(3, 2)
    zero = _layer_0_zero(3, 2)
    with pytest.raises(NothingSelected) as info:
        select(comply, refuse, CosmicSettings(median_peak_filter=False), KL(), zero=zero)
    message = str(info.value)
    assert "(zero: 3, layer: 3)" in message
    besides = "the layer filter removed the most besides the zero filter, whose directions are "
    assert besides + "exactly zero" in message
    assert message.endswith("— keep later layers with a smaller --prune-layer-fraction")
    settings = CosmicSettings(median_peak_filter=False, prune_layer_fraction=0.0)
    outcome = select(comply, refuse, settings, KL(), zero=zero)
    assert outcome.selected.layer == 1
    with pytest.raises(NothingSelected) as info:
        select(comply, refuse, settings, KL(default=1.0), zero=zero)
    message = str(info.value)
    assert "(zero: 3, kl: 3)" in message
    assert "the kl filter removed the most besides the zero filter" in message
    assert message.endswith("— allow more drift with a larger --kl-threshold")


def test_zero_mask_must_match_the_scores() -> None:
    comply, refuse = _scores(2, 10)
    with pytest.raises(RefusalkitError, match="zero-direction mask of shape"):
        select(comply, refuse, CosmicSettings(), KL(), zero=_layer_0_zero(2, 9))


def test_refusal_score_selection_never_picks_a_zero_candidate() -> None:
    """The output-based selectors do not score zero directions (NaN): the zero filter, not the
    NaN filter, drops them, and a zero candidate with a real best score is not picked either."""
    bypass = torch.arange(20, dtype=torch.float64).reshape(2, 10)
    induce = torch.ones(2, 10, dtype=torch.float64)
    bypass[0, 0] = induce[0, 0] = NAN  # not scored
    bypass[1, 0] = -100.0  # the best bypass, at a zero direction
    zero = _layer_0_zero(2, 10)
    kl = KL()
    outcome = select_by_refusal_score(bypass, induce, RefusalScoreSettings(), kl, zero=zero)
    assert (outcome.selected.position, outcome.selected.layer) == (-2, 1)
    assert kl.calls == [(-2, 1)]
    statuses = {(r.position, r.layer): r.status for r in outcome.records}
    assert statuses[(-2, 0)] == statuses[(-1, 0)] == "zero"
    assert "nan" not in statuses.values()
    # Every real candidate over the KL threshold: the KL filter is named, not a zero pick.
    with pytest.raises(NothingSelected) as info:
        select_by_refusal_score(bypass, induce, RefusalScoreSettings(), KL(default=1.0), zero=zero)
    message = str(info.value)
    assert "(zero: 2, layer: 4, kl: 14)" in message
    assert "the kl filter removed the most" in message


# --- nothing survives ----------------------------------------------------------------------------


def test_all_filtered_by_kl_names_the_kl_filter() -> None:
    comply, refuse = _scores(1, 10)
    kl = KL(default=1.0)
    with pytest.raises(RefusalkitError) as info:
        select(comply, refuse, CosmicSettings(), kl)
    message = str(info.value)
    assert "10 candidates" in message
    assert "layer: 2" in message and "kl: 8" in message
    assert "the kl filter removed the most" in message
    assert "--kl-threshold" in message
    assert len(kl.calls) == 8


def test_all_filtered_mostly_by_layer_names_the_layer_filter() -> None:
    comply, refuse = _scores(1, 10)
    with pytest.raises(RefusalkitError) as info:
        select(comply, refuse, CosmicSettings(prune_layer_fraction=0.9), KL(default=1.0))
    message = str(info.value)
    assert "layer: 9" in message and "kl: 1" in message
    assert "the layer filter removed the most" in message
    assert "--prune-layer-fraction" in message


def test_all_filtered_mostly_by_median_peak_names_it() -> None:
    comply, refuse = _scores(2, 10)
    comply[0, 1:] = refuse[0, 1:] = NAN  # position -2 peaks at layer 0, its other layers are NaN
    with pytest.raises(RefusalkitError) as info:
        select(comply, refuse, CosmicSettings(), KL(default=1.0))
    message = str(info.value)
    # median_peak: position -1 layers 1..9; layer: position -2 layers 8, 9; nan: position -2
    # layers 1..7; kl: (-2, 0) and (-1, 0).
    assert "median_peak: 9" in message and "nan: 7" in message and "kl: 2" in message
    assert "the median_peak filter removed the most" in message
    assert "--no-median-peak-filter" in message


def test_all_nan_names_the_nan_filter() -> None:
    comply = torch.full((2, 10), NAN, dtype=torch.float64)
    refuse = comply.clone()
    kl = KL()
    with pytest.raises(RefusalkitError) as info:
        select(comply, refuse, CosmicSettings(median_peak_filter=False), kl)
    message = str(info.value)
    assert "nan: 16" in message and "the nan filter removed the most" in message
    assert "--dtype float32" in message
    assert kl.calls == []


# --- evaluation layers ---------------------------------------------------------------------------


def _means_with_similarities(similarities: list[float]) -> tuple[torch.Tensor, torch.Tensor]:
    """Class means whose cosine at layer l is exactly similarities[l]."""
    n = len(similarities)
    harmless = torch.zeros(n, 4, dtype=torch.float64)
    harmless[:, 0] = 2.0
    harmful = torch.zeros(n, 4, dtype=torch.float64)
    for layer, c in enumerate(similarities):
        harmful[layer, 0] = 3.0 * c
        harmful[layer, 1] = 3.0 * math.sqrt(1 - c * c)
    return harmful.float(), harmless.float()


def test_low_similarity_layers_never_empty() -> None:
    similarities = [0.99, 0.95, 0.5, 0.9, 0.97]
    harmful, harmless = _means_with_similarities(similarities)
    chosen = low_similarity_layers(harmful, harmless, CosmicSettings())  # ⌊0.1·5⌋ = 0
    assert chosen.layers == (2,)
    assert "single least similar" in chosen.note
    assert chosen.similarities == pytest.approx(similarities, abs=1e-6)


def test_low_similarity_layers_fraction() -> None:
    similarities = [0.99, 0.2, 0.95, 0.9, 0.1, 0.97, 0.8, 0.85, 0.96, 0.98] * 2
    harmful, harmless = _means_with_similarities(similarities)
    chosen = low_similarity_layers(harmful, harmless, CosmicSettings())  # ⌊0.1·20⌋ = 2
    assert chosen.layers == (4, 14)
    wider = low_similarity_layers(harmful, harmless, CosmicSettings(l_low_fraction=0.25))
    assert wider.layers == (1, 4, 6, 11, 14)  # 0.8 at 6 and 16: the earlier layer


def test_low_similarity_layers_second_half() -> None:
    similarities = [0.1, 0.2, 0.3, 0.9, 0.95, 0.99, 0.8, 0.97, 0.96, 0.98]
    harmful, harmless = _means_with_similarities(similarities)
    full = low_similarity_layers(harmful, harmless, CosmicSettings())
    assert full.layers == (0,)
    half = low_similarity_layers(harmful, harmless, CosmicSettings(l_low_second_half=True))
    assert half.layers == (6,)
    assert "second half" in half.note
    half2 = low_similarity_layers(
        harmful, harmless, CosmicSettings(l_low_second_half=True, l_low_fraction=0.3)
    )
    assert half2.layers == (6, 7, 8) and all(layer >= 5 for layer in half2.layers)


def test_low_similarity_layers_explicit() -> None:
    harmful, harmless = _means_with_similarities([0.1, 0.2, 0.3, 0.9, 0.95])
    chosen = low_similarity_layers(harmful, harmless, CosmicSettings(l_low_layers=(4, 3)))
    assert chosen.layers == (3, 4)
    assert chosen.note == "set by the user"
    with pytest.raises(RefusalkitError, match="out of range"):
        low_similarity_layers(harmful, harmless, CosmicSettings(l_low_layers=(2, 5)))
    with pytest.raises(RefusalkitError, match="out of range"):
        low_similarity_layers(harmful, harmless, CosmicSettings(l_low_layers=(-1,)))


def test_cosine_and_aggregate() -> None:
    a = torch.tensor([1.0, 0.0])
    assert cosine(a, torch.tensor([0.0, 2.0])) == pytest.approx(0.0)
    assert cosine(a, torch.tensor([-3.0, 0.0])) == pytest.approx(-1.0)
    assert cosine(a, torch.zeros(2)) == 0.0  # no division by zero
    means = torch.tensor([[3.0, 0.0], [1.0, 2.0]])
    mean = aggregate(means, "mean")
    assert mean.tolist() == pytest.approx([2 / math.sqrt(5), 1 / math.sqrt(5)])
    concat = aggregate(means, "concat")
    assert concat.shape == (4,) and float(concat.norm()) == pytest.approx(1.0)
