"""Output-based selection (Arditi et al., NeurIPS 2024; SPEC §4), the pure part.

It scores a candidate by the refusal log-odds at the first response position: how much probability
the model puts on the first tokens of refusal phrases. It is the baseline COSMIC is compared with,
and it needs what COSMIC avoids: a list of refusal tokens for this tokenizer.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from refusalkit.errors import RefusalkitError
from refusalkit.evaluation.judges import REFUSAL_PHRASES
from refusalkit.selection.filters import ZERO, ZERO_HINT, all_filtered, first_within_kl, zero_mask

EPSILON = 1e-8


@dataclass(frozen=True)
class RefusalTokens:
    """The refusal token set R, derived from the tokenizer (never hard-coded per family)."""

    ids: tuple[int, ...]
    strings: tuple[str, ...]
    phrases: tuple[str, ...]


def refusal_tokens(tokenizer: Any, phrases: Sequence[str] = REFUSAL_PHRASES) -> RefusalTokens:
    """First token of each refusal phrase as the model would start its answer with it."""
    ids: list[int] = []
    for phrase in phrases:
        encoded = tokenizer(phrase, add_special_tokens=False)["input_ids"]
        if encoded and encoded[0] not in ids:
            ids.append(int(encoded[0]))
    if not ids:
        raise RefusalkitError("no refusal tokens could be derived from the refusal phrases")
    return RefusalTokens(tuple(ids), tuple(tokenizer.decode([i]) for i in ids), tuple(phrases))


def refusal_log_odds(logits: torch.Tensor, token_ids: Sequence[int]) -> torch.Tensor:
    """``log(p + ε) − log(1 − p + ε)`` with ``p`` the probability mass on the refusal tokens."""
    probabilities = torch.softmax(logits.double(), dim=-1)
    p = probabilities[:, list(token_ids)].sum(-1)
    return torch.log(p + EPSILON) - torch.log(1 - p + EPSILON)


@dataclass(frozen=True)
class RefusalScoreSettings:
    steering: str = "lce"
    prune_layer_fraction: float = 0.2
    kl_threshold: float = 0.1
    induce_threshold: float = 0.0  # drop candidates whose mean induce score is below this

    def max_layer(self, n_layers: int) -> int:
        return math.floor((1.0 - self.prune_layer_fraction) * n_layers + 1e-9)


@dataclass
class RefusalScoreRecord:
    position: int
    layer: int
    bypass: float  # mean refusal score on harmful val under removal (lower is better)
    induce: float  # mean refusal score on harmless val under addition
    kl: float = math.nan
    status: str = "kept"  # selected | zero | layer | nan | induce | kl | not_needed

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class RefusalScoreOutcome:
    selected: RefusalScoreRecord
    records: list[RefusalScoreRecord] = field(default_factory=list)


# In the order the filters run; on a tie the earlier filter is named.
FILTER_HINTS = {
    ZERO: ZERO_HINT,
    "layer": "keep later layers with a smaller --prune-layer-fraction",
    "induce": "no candidate raised the refusal-token log-odds on harmless prompts to "
    "--induce-threshold; lower it, or use COSMIC, which needs no refusal tokens",
    "kl": "allow more drift with a larger --kl-threshold",
    "nan": "scores were NaN: check the model's activations (try --dtype float32)",
}


def select_by_refusal_score(
    bypass: torch.Tensor,
    induce: torch.Tensor,
    settings: RefusalScoreSettings,
    kl_of: Callable[[int, int], float],
    *,
    zero: torch.Tensor | None = None,
) -> RefusalScoreOutcome:
    """Filters (zero, layer, NaN, induce, then KL lazily in ascending-bypass order);
    ``argmin bypass``.

    ``zero`` (``[P, L]`` bool, None for none) marks candidates whose direction is exactly zero:
    their interventions are identities, so they cannot be a refusal direction (with KL 0 they
    would pass every other filter). Their scores may be NaN (not computed): the zero filter runs
    first.
    """
    n_positions, n_layers = bypass.shape
    records = [
        RefusalScoreRecord(p - n_positions, l, float(bypass[p, l]), float(induce[p, l]))
        for p in range(n_positions)
        for l in range(n_layers)
    ]
    zero = zero_mask(zero, n_positions, n_layers)
    cutoff = settings.max_layer(n_layers)
    for record in records:
        if bool(zero[record.position, record.layer]):
            record.status = ZERO
        elif record.layer >= cutoff:
            record.status = "layer"
        elif math.isnan(record.bypass) or math.isnan(record.induce):
            record.status = "nan"
        elif record.induce < settings.induce_threshold:
            record.status = "induce"
    survivors = sorted(
        # Exact ties: earlier position, then earlier layer (position-major, as the reference).
        (r for r in records if r.status == "kept"),
        key=lambda r: (r.bypass, r.position, r.layer),
    )
    selected = first_within_kl(survivors, kl_of, settings.kl_threshold)
    if selected is None:
        raise all_filtered("refusal-score selection", records, FILTER_HINTS)
    return RefusalScoreOutcome(selected, records)
