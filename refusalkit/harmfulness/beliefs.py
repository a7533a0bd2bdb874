"""The pure part of SPEC §8: centroids, the harmfulness and refusal directions, belief scores and
threshold calibration, over already read activations (``[N, L, d]``, one row per prompt). No model
access here."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch


def centroid(activations: torch.Tensor) -> torch.Tensor:
    """Mean over prompts, float64: ``[N, L, d]`` -> ``[L, d]``."""
    if activations.shape[0] == 0:
        raise ValueError("a centroid of no prompts")
    return activations.double().mean(0)


def per_layer_cosine(u: torch.Tensor, v: torch.Tensor) -> list[float]:
    """cos(u^l, v^l) per layer for ``[L, d]`` pairs (NaN where either is zero)."""
    u64, v64 = u.double(), v.double()
    norms = u64.norm(dim=-1) * v64.norm(dim=-1)
    cosines = (u64 * v64).sum(-1) / norms
    return [float(c) if n > 0 else math.nan for c, n in zip(cosines, norms, strict=True)]


def belief_scores(
    activations: torch.Tensor,
    toward: torch.Tensor,
    away: torch.Tensor,
    layers: Sequence[int],
    centred: bool = False,
) -> torch.Tensor:
    """SPEC §8's belief score per prompt: the mean over ``layers`` of
    ``cos(h^l, A^l) − cos(h^l, B^l)`` (``toward`` = A, ``away`` = B centroids, ``[L, d]``).

    ``centred`` subtracts the midpoint of the two centroids from everything first: a small model's
    activations share a large common component, which leaves raw cosines near 1 for every prompt
    and the difference small and offset; centred, the score is ``2·cos(h − m, A − B)`` per layer,
    symmetric around 0 between the two centroids."""
    index = list(layers)
    h = activations[:, index].double()
    a, b = toward[index].double(), away[index].double()
    if centred:
        middle = (a + b) / 2
        h, a, b = h - middle, a - middle, b - middle
    h_norm = h.norm(dim=-1).clamp_min(1e-30)
    s_toward = (h * a).sum(-1) / (h_norm * a.norm(dim=-1).clamp_min(1e-30))
    s_away = (h * b).sum(-1) / (h_norm * b.norm(dim=-1).clamp_min(1e-30))
    return (s_toward - s_away).mean(-1)


def length_direction(groups: Sequence[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
    """Per layer, the unit direction along which activations move with the prompt's length:
    the pooled within-group least-squares slope of ``[N, L, d]`` activations on the log of each
    prompt's token count (``[N]``), one group per class. Within each group, so a difference
    between the classes' means (what the guard is for) is never mistaken for length. Zero at a
    layer where it is undefined (no length varies within any group, or no activation moves)."""
    xs, ys = [], []
    for activations, counts in groups:
        if activations.shape[0] != counts.shape[0]:
            raise ValueError("one token count per prompt")
        x = activations.double()
        y = counts.double().clamp_min(1.0).log()
        xs.append(x - x.mean(0))
        ys.append(y - y.mean())
    x, y = torch.cat(xs), torch.cat(ys)
    spread = float(y @ y)
    # two different token counts differ by at least log(1 + 1/n) in log length, far above this;
    # equal counts leave only the rounding of their mean
    if spread <= 1e-12 * len(y):
        return torch.zeros(x.shape[1:], dtype=torch.float64)
    slope = torch.einsum("n,nld->ld", y, x) / spread
    norms = slope.norm(dim=-1, keepdim=True)
    return torch.where(norms > 0, slope / norms.clamp_min(1e-30), torch.zeros_like(slope))


def remove_direction(activations: torch.Tensor, unit: torch.Tensor) -> torch.Tensor:
    """``h − (h·u)u`` per layer: ``[N, L, d]`` activations without their component along the unit
    (or zero) vectors ``[L, d]``; float64."""
    h = activations.double()
    u = unit.double()
    return h - torch.einsum("nld,ld->nl", h, u)[..., None] * u


@dataclass(frozen=True)
class Threshold:
    tau: float
    balanced_accuracy: float  # on the scores it was calibrated on


def balanced_accuracy(positive: torch.Tensor, negative: torch.Tensor, tau: float) -> float:
    """Mean of the two classes' accuracies for the rule ``score ≥ tau`` ⇒ positive."""
    return 0.5 * (
        float((positive >= tau).double().mean()) + float((negative < tau).double().mean())
    )


def calibrate_threshold(positive: torch.Tensor, negative: torch.Tensor) -> Threshold:
    """The ``tau`` with the best balanced accuracy on these scores: the midpoint between two
    neighbouring scores (never a score itself, so a tie in value cannot fall on both sides); among
    equally good ones the one closest to 0, the uncalibrated rule."""
    values = torch.cat([positive, negative]).double().unique().sort().values
    cuts = [
        float(values[0]) - 1.0,
        *((values[:-1] + values[1:]) / 2).tolist(),
        float(values[-1]) + 1.0,
    ]
    best = max(cuts, key=lambda t: (round(balanced_accuracy(positive, negative, t), 12), -abs(t)))
    return Threshold(best, balanced_accuracy(positive, negative, best))
