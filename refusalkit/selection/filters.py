"""Filter steps shared by the selectors: the lazy KL pass and the all-filtered error."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol, TypeVar

from refusalkit.errors import RefusalkitError


class Candidate(Protocol):
    position: int
    layer: int
    kl: float
    status: str

    def as_dict(self) -> dict[str, Any]: ...


C = TypeVar("C", bound=Candidate)


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
    """The error when nothing survives: which filter removed the most, and how to relax it."""
    counts = {name: sum(c.status == name for c in candidates) for name in hints}
    worst = max(counts, key=lambda name: counts[name])
    detail = ", ".join(f"{name}: {count}" for name, count in counts.items() if count)
    return NothingSelected(
        f"{method}: every one of the {len(candidates)} candidates was filtered out ({detail}); "
        f"the {worst} filter removed the most — {hints[worst]}",
        candidates,
    )
