"""Rates with counts and 95% Wilson intervals."""

from __future__ import annotations

import math
from dataclasses import dataclass


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
        """``0.17 (11/64, 95% CI 0.10–0.28)``: every rate shown with its count and interval."""
        if self.n == 0:
            return f"– ({self.count}/{self.n} judged)"
        low, high = self.ci95
        return f"{self.value:.2f} ({self.count}/{self.n}, 95% CI {low:.2f}–{high:.2f})"
