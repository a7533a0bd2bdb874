"""The pure part of SPEC §9: angles between per-category directions, their clustering order, and
the spectrum of the stacked directions. No model access here."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch


def cosine_matrix(directions: torch.Tensor) -> torch.Tensor:
    """``[C, d]`` -> ``[C, C]`` pairwise cosines, float64."""
    unit = directions.double() / directions.double().norm(dim=-1, keepdim=True).clamp_min(1e-30)
    return unit @ unit.T


def cosines_with(directions: torch.Tensor, vector: torch.Tensor) -> list[float]:
    """Each row's cosine with ``vector``."""
    unit = vector.double() / vector.double().norm().clamp_min(1e-30)
    rows = directions.double()
    return (rows @ unit / rows.norm(dim=-1).clamp_min(1e-30)).tolist()


def _agglomerate(cosines: torch.Tensor, until: int) -> list[list[int]]:
    """Average-linkage agglomerative clustering on ``1 − cos`` until ``until`` clusters are left
    (ties: the pair found first, lower indices first); each cluster's leaves in merge order."""
    clusters: list[list[int]] = [[i] for i in range(int(cosines.shape[0]))]
    distance = 1.0 - cosines.double()
    while len(clusters) > until:
        pairs = [
            (float(distance[clusters[i]][:, clusters[j]].mean()), i, j)
            for i in range(len(clusters))
            for j in range(i + 1, len(clusters))
        ]
        _, i, j = min(pairs)
        merged = clusters[i] + clusters[j]
        clusters = [c for k, c in enumerate(clusters) if k not in (i, j)] + [merged]
    return clusters


def cluster_order(cosines: torch.Tensor) -> list[int]:
    """The leaf order of the whole average-linkage tree, so that similar categories sit together
    in a heatmap."""
    return _agglomerate(cosines, 1)[0]


def two_clusters(cosines: torch.Tensor) -> list[list[int]]:
    """The last split of the same tree: the two groups merged last."""
    return [sorted(c) for c in _agglomerate(cosines, 2)]


@dataclass(frozen=True)
class Spectrum:
    explained: list[float]  # share of the squared singular values, per component
    components: torch.Tensor  # [k, d] right singular vectors (unit rows)

    @property
    def n_components_90(self) -> int:
        total = 0.0
        for k, share in enumerate(self.explained, start=1):
            total += share
            if total >= 0.9 - 1e-12:
                return k
        return len(self.explained)

    @property
    def participation_ratio(self) -> float:
        """(Σλ)² / Σλ² of the variances: 1 for one direction, C for C equal ones."""
        squares = sum(x * x for x in self.explained)
        return 1.0 / squares if squares > 0 else math.nan


def spectrum(directions: torch.Tensor, centred: bool) -> Spectrum:
    """SVD of the stacked ``[C, d]`` directions: uncentred (the seed study's PCA of directions:
    how many directions span them) or centred (how they vary around their mean)."""
    rows = directions.double()
    if centred:
        rows = rows - rows.mean(0, keepdim=True)
    _, singular, vh = torch.linalg.svd(rows, full_matrices=False)
    power = singular**2
    total = float(power.sum())
    explained = (power / total).tolist() if total > 0 else [0.0] * len(power)
    return Spectrum(explained, vh)


def orthonormal_top(components: torch.Tensor, k: int) -> torch.Tensor:
    """The first ``k`` principal directions as orthonormal rows ``[k, d]``."""
    basis, _ = torch.linalg.qr(components[:k].double().T)
    return basis.T


def cone_samples(n_categories: int, n_samples: int, seed: int) -> torch.Tensor:
    """``[n_samples, C]`` non-negative weights summing to 1 (flat Dirichlet): points of the cone
    the category directions span, each one normalised later."""
    generator = torch.Generator().manual_seed(seed)
    exponential = -torch.log(
        torch.rand(n_samples, n_categories, generator=generator, dtype=torch.float64)
    )
    return exponential / exponential.sum(-1, keepdim=True)


def quantiles(
    values: Sequence[float], levels: Sequence[float] = (0.0, 0.1, 0.25, 0.5, 0.75, 0.9, 1.0)
) -> dict[str, float]:
    ordered = torch.tensor(sorted(values), dtype=torch.float64)
    return {f"q{round(level * 100):02d}": float(torch.quantile(ordered, level)) for level in levels}
