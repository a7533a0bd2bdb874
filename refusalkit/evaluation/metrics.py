"""Rates with counts and 95% Wilson intervals."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any


def wilson_interval(successes: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    """95% Wilson score interval; well behaved at 0 and n, unlike the normal approximation."""
    if n == 0:
        return (math.nan, math.nan)
    p = successes / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    # At 0 or n the bound is exactly the observed rate; floating-point rounding must not move it.
    low = 0.0 if successes == 0 else max(0.0, centre - half)
    high = 1.0 if successes == n else min(1.0, centre + half)
    return (low, high)


@dataclass(frozen=True)
class Rate:
    count: int
    n: int

    @property
    def value(self) -> float:
        return self.count / self.n if self.n else math.nan

    @property
    def ci95(self) -> tuple[float, float]:
        return wilson_interval(self.count, self.n)

    def describe(self) -> str:
        low, high = self.ci95
        return f"{self.value:.2f} ({self.count}/{self.n}, 95% CI {low:.2f}–{high:.2f})"


def format_rate(rate: float | None, count: int, n: int, ci95: Sequence[float | None]) -> str:
    """``0.17 (11/64, 95% CI 0.10–0.28)``: every rate shown with its count and interval."""
    if n == 0 or rate is None or ci95[0] is None or ci95[1] is None:
        return f"– ({count}/{n} judged)"
    return f"{rate:.2f} ({count}/{n}, 95% CI {ci95[0]:.2f}–{ci95[1]:.2f})"


def format_block_rate(block: Mapping[str, Any], prefix: str, n_key: str = "n") -> str:
    """:func:`format_rate` of ``<prefix>_rate``/``_count``/``_rate_ci95`` in a summary block."""
    return format_rate(
        block[f"{prefix}_rate"],
        block[f"{prefix}_count"],
        block[n_key],
        block[f"{prefix}_rate_ci95"],
    )
