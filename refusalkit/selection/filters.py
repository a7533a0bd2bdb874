"""Filter steps shared by the selectors: the lazy KL pass and the all-filtered error."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol, TypeVar

import torch

from refusalkit.errors import RefusalkitError


class Candidate(Protocol):
    position: int
    layer: int
    kl: float
    status: str

    def as_dict(self) -> dict[str, Any]: ...


C = TypeVar("C", bound=Candidate)

# The zero filter: a candidate whose direction is exactly zero makes identity interventions
# (``unit(0) = 0``), so it cannot be a refusal direction, though with its clean scores and KL 0
# it would pass every filter of SPEC §3-4. No option relaxes it.
ZERO = "zero"
_ZERO_REASON = (
    "the harmful and harmless activations are identical there, as at layer 0 on the template tokens"
)
ZERO_HINT = (
    f"their directions are exactly zero ({_ZERO_REASON}), so they cannot change the model; keep "
    "later layers with a smaller --prune-layer-fraction, or use more or different --harmful and "
    "--harmless prompts"
)


def zero_mask(zero: torch.Tensor | None, n_positions: int, n_layers: int) -> torch.Tensor:
    """``[P, L]`` bool: the zero filter's mask (all False for None), shape-checked."""
    if zero is None:
        return torch.zeros(n_positions, n_layers, dtype=torch.bool)
    if tuple(zero.shape) != (n_positions, n_layers):
        raise RefusalkitError(
            f"zero-direction mask of shape {tuple(zero.shape)} for {n_positions}×{n_layers} "
            "candidates"
        )
    return zero.bool().cpu()


def first_within_kl(
    ranked: Sequence[C], kl_of: Callable[[int, int], float], threshold: float
) -> C | None:
    """Walk candidates best first, computing KL only until one passes; mark every status."""
    selected = None
    for candidate in ranked:
        if selected is not None:
            candidate.status = "not_needed"
            continue
        candidate.kl = float(kl_of(candidate.position, candidate.layer))
        if math.isnan(candidate.kl) or candidate.kl > threshold:
            candidate.status = "kl"
        else:
            candidate.status = "selected"
            selected = candidate
    return selected


class NothingSelected(RefusalkitError):
    """Every candidate was filtered out; ``candidates`` keeps their scores and statuses, so the
    failure can still be reported and plotted."""

    def __init__(self, message: str, candidates: Sequence[Candidate]) -> None:
        super().__init__(message)
        self.candidates = list(candidates)


def all_filtered(
    method: str, candidates: Sequence[Candidate], hints: Mapping[str, str]
) -> NothingSelected:
    """The error when nothing survives: which filter removed the most, and how to relax it.

    Ties go to the filter listed first in ``hints``. No option relaxes the zero filter, so its
    hint is the answer only when no other filter removed anything; otherwise the filter that
    removed the most of the others is named, and the zero filter explained beside it when it
    removed at least as many (a two-layer model: the layer filter drops layer 1, the zero filter
    layer 0)."""
    counts = {name: sum(c.status == name for c in candidates) for name in hints}
    detail = ", ".join(f"{name}: {count}" for name, count in counts.items() if count)
    others = {name: count for name, count in counts.items() if name != ZERO and count}
    if others:
        worst = max(others, key=lambda name: others[name])
        besides = (
            " besides the zero filter, whose directions are exactly zero and cannot change the "
            f"model ({_ZERO_REASON})"
            if counts.get(ZERO, 0) >= others[worst]
            else ""
        )
    else:
        worst, besides = max(counts, key=lambda name: counts[name]), ""
    return NothingSelected(
        f"{method}: every one of the {len(candidates)} candidates was filtered out ({detail}); "
        f"the {worst} filter removed the most{besides} — {hints[worst]}",
        candidates,
    )
