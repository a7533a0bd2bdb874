"""Difference-in-means candidate directions at every post-instruction position and layer."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from refusalkit.activations import (
    EncodedBatch,
    first_non_finite,
    forward,
    non_finite_activations,
)
from refusalkit.io import read_tensors, write_tensors
from refusalkit.models.adapter import ModelAdapter
from refusalkit.progress import track


@dataclass
class CandidateSet:
    """``r[i, l] = μ⁺[i, l] − μ⁻[i, l]`` for positions ``-P..-1`` (axis 0) and layers (axis 1).

    Means are accumulated in float64 over block inputs. ``harmless_means`` is μ⁻, the ACE
    reference, kept so any candidate can be re-applied later.
    """

    harmful_means: torch.Tensor  # [P, L, d] float64
    harmless_means: torch.Tensor  # [P, L, d] float64

    @property
    def directions(self) -> torch.Tensor:
        return self.harmful_means - self.harmless_means

    @property
    def n_positions(self) -> int:
        return int(self.harmful_means.shape[0])

    @property
    def n_layers(self) -> int:
        return int(self.harmful_means.shape[1])

    @property
    def positions(self) -> list[int]:
        return list(range(-self.n_positions, 0))

    def direction(self, position: int, layer: int) -> torch.Tensor:
        return self.directions[position, layer].float()

    def reference(self, position: int, layer: int) -> torch.Tensor:
        return self.harmless_means[position, layer].float()

    def save(self, path: Path) -> None:
        write_tensors(
            path,
            {
                "directions": self.directions,
                "harmful_means": self.harmful_means,
                "harmless_means": self.harmless_means,
            },
            {"layout": "[position -P..-1, layer (block input), hidden]"},
        )

    @staticmethod
    def load(path: Path) -> CandidateSet:
        tensors = read_tensors(path, ("harmful_means", "harmless_means"))
        return CandidateSet(tensors["harmful_means"], tensors["harmless_means"])


def contrast_retained(
    original: CandidateSet, edited: CandidateSet, position: int, layer: int
) -> dict[str, float | int | None]:
    """How much of the original model's harmful−harmless difference at (position, layer) is left
    in an edited model's: ``norm_ratio`` = ‖r_edited‖ / ‖r_original‖ and their ``cosine`` (None
    where either is zero). Why: a stage-2 direction can only be as strong as the contrast the
    stage-1 edit left behind, and an affine edit at layer l removes it there exactly."""
    before = original.directions[position, layer]
    after = edited.directions[position, layer]
    norm_before, norm_after = float(before.norm()), float(after.norm())
    both = norm_before > 0 and norm_after > 0
    return {
        "position": position,
        "layer": layer,
        "norm_ratio": norm_after / norm_before if norm_before > 0 else None,
        "cosine": float(before @ after) / (norm_before * norm_after) if both else None,
    }


def mean_activations(
    adapter: ModelAdapter,
    batches: Sequence[EncodedBatch],
    positions: Sequence[int],
    description: str,
) -> torch.Tensor:
    """Mean block input over prompts, float64, shape ``[len(positions), L, d]``."""
    layers = list(range(adapter.n_layers))
    total = torch.zeros(len(positions), adapter.n_layers, adapter.hidden_size, dtype=torch.float64)
    count = 0
    for batch in track(batches, description):
        readings = forward(adapter, batch, read_layers=layers, positions=positions).readings
        for layer in layers:
            total[:, layer] += readings[layer].double().sum(0).cpu()
        count += batch.size
    return total / count


def compute_candidates(
    adapter: ModelAdapter,
    harmful: Sequence[EncodedBatch],
    harmless: Sequence[EncodedBatch],
    n_positions: int,
) -> CandidateSet:
    positions = list(range(-n_positions, 0))
    harmful_means = mean_activations(adapter, harmful, positions, "candidates: harmful train")
    _check_finite(harmful_means, positions, "harmful train")
    harmless_means = mean_activations(adapter, harmless, positions, "candidates: harmless train")
    _check_finite(harmless_means, positions, "harmless train")
    return CandidateSet(harmful_means=harmful_means, harmless_means=harmless_means)


def _check_finite(means: torch.Tensor, positions: Sequence[int], prompts: str) -> None:
    """NaN/inf readings leave the mean non-finite (float32 readings summed in float64 cannot
    overflow), so one look at the ``[P, L, d]`` means finds the first bad layer, with no check
    per batch or token."""
    found = first_non_finite(means)
    if found is not None:
        row, layer = found
        raise non_finite_activations(layer, f"position {positions[row]}", prompts)
