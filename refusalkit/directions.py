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
from refusalkit.config import LLowConvention
from refusalkit.errors import RefusalkitError
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
    # [2, d] float64: the harmful and harmless means at position -1 after the final norm
    # (residual point L), read only for the reference L_low convention (SPEC §3.1).
    final_norm_means: torch.Tensor | None = None

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

    def last_token_means(self, convention: LLowConvention) -> tuple[torch.Tensor, torch.Tensor]:
        """The harmful and harmless means at position -1 per layer, ``[L, d]`` each, in an
        L_low convention: ``block-input`` (SPEC §0) or ``reference`` (block outputs: point
        ``l + 1``, the last one after the final norm, as the reference code's
        ``hidden_states[1:]``)."""
        harmful, harmless = self.harmful_means[-1], self.harmless_means[-1]
        if convention == "block-input":
            return harmful, harmless
        if self.final_norm_means is None:
            raise RefusalkitError(
                "these candidates hold no final-norm means, which the reference L_low convention "
                "reads; extract them with final_norm=True (l_low_convention='reference')"
            )
        final = self.final_norm_means
        return torch.cat([harmful[1:], final[0:1]]), torch.cat([harmless[1:], final[1:2]])

    def save(self, path: Path) -> None:
        tensors = {
            "directions": self.directions,
            "harmful_means": self.harmful_means,
            "harmless_means": self.harmless_means,
        }
        if self.final_norm_means is not None:
            tensors["final_norm_means"] = self.final_norm_means
        write_tensors(
            path,
            tensors,
            {
                "layout": "[position -P..-1, layer (block input), hidden]",
                "final_norm_means": "[harmful, harmless] at position -1 after the final norm",
            },
        )

    @staticmethod
    def load(path: Path) -> CandidateSet:
        tensors = read_tensors(path, ("harmful_means", "harmless_means"))
        return CandidateSet(
            tensors["harmful_means"], tensors["harmless_means"], tensors.get("final_norm_means")
        )


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
    final_norm: bool = False,
) -> torch.Tensor:
    """Mean residual stream over prompts, float64, shape ``[len(positions), L, d]`` (block
    inputs), or ``[len(positions), L + 1, d]`` with ``final_norm`` (the last entry read after
    the final norm: one more block per forward)."""
    layers = list(range(adapter.n_layers + (1 if final_norm else 0)))
    total = torch.zeros(len(positions), len(layers), adapter.hidden_size, dtype=torch.float64)
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
    final_norm: bool = False,
) -> CandidateSet:
    """``final_norm``: also keep the position -1 means after the final norm (the reference
    L_low convention reads them)."""
    positions = list(range(-n_positions, 0))
    means = []
    for prompts, label in ((harmful, "harmful train"), (harmless, "harmless train")):
        mean = mean_activations(adapter, prompts, positions, f"candidates: {label}", final_norm)
        _check_finite(mean, positions, label, adapter.n_layers)
        means.append(mean)
    n = adapter.n_layers
    final = torch.stack([means[0][-1, n], means[1][-1, n]]) if final_norm else None
    return CandidateSet(means[0][:, :n].contiguous(), means[1][:, :n].contiguous(), final)


def _check_finite(
    means: torch.Tensor, positions: Sequence[int], prompts: str, n_layers: int
) -> None:
    """NaN/inf readings leave the mean non-finite (float32 readings summed in float64 cannot
    overflow), so one look at the ``[P, L, d]`` means finds the first bad layer, with no check
    per batch or token."""
    found = first_non_finite(means)
    if found is not None:
        row, layer = found
        raise non_finite_activations(layer, f"position {positions[row]}", prompts, n_layers)
