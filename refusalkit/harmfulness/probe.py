"""The stronger baseline a latent guard must be compared with: an L2-regularised logistic
regression probe on the same activations (SPEC §8's controls). Plain torch, deterministic (L-BFGS
from zero)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from refusalkit.harmfulness.beliefs import balanced_accuracy

# Regularisation strengths tried; the one with the best validation balanced accuracy is kept.
PENALTIES = (1e-4, 1e-3, 1e-2, 1e-1, 1.0)


def probe_features(activations: torch.Tensor, layers: Sequence[int]) -> torch.Tensor:
    """``[N, L, d]`` -> ``[N, |layers|·d]``: each layer's vector scaled to unit norm (every layer
    counts the same, whatever its activation scale), concatenated."""
    h = activations[:, list(layers)].double()
    return (h / h.norm(dim=-1, keepdim=True).clamp_min(1e-30)).flatten(1)


@dataclass
class LogisticProbe:
    mean: torch.Tensor
    scale: torch.Tensor
    weight: torch.Tensor
    bias: torch.Tensor
    penalty: float

    def logits(self, features: torch.Tensor) -> torch.Tensor:
        return ((features.double() - self.mean) / self.scale) @ self.weight + self.bias


def _train(x: torch.Tensor, y: torch.Tensor, penalty: float) -> tuple[torch.Tensor, torch.Tensor]:
    weight = torch.zeros(x.shape[1], dtype=torch.float64, requires_grad=True)
    bias = torch.zeros((), dtype=torch.float64, requires_grad=True)
    optimiser = torch.optim.LBFGS([weight, bias], max_iter=200, line_search_fn="strong_wolfe")

    def loss() -> torch.Tensor:
        optimiser.zero_grad()
        value = torch.nn.functional.binary_cross_entropy_with_logits(x @ weight + bias, y)
        value = value + penalty * (weight * weight).sum()
        value.backward()
        return value

    with torch.enable_grad():
        optimiser.step(loss)
    return weight.detach(), bias.detach()


def fit_probe(
    positive: torch.Tensor,
    negative: torch.Tensor,
    val_positive: torch.Tensor,
    val_negative: torch.Tensor,
) -> LogisticProbe:
    """Fit on the train features, choose the penalty on the validation features."""
    x = torch.cat([positive, negative]).double()
    y = torch.cat([torch.ones(len(positive)), torch.zeros(len(negative))]).double()
    mean, scale = x.mean(0), x.std(0).clamp_min(1e-8)
    standard = (x - mean) / scale
    best: LogisticProbe | None = None
    best_accuracy = -1.0
    for penalty in PENALTIES:
        weight, bias = _train(standard, y, penalty)
        probe = LogisticProbe(mean, scale, weight, bias, penalty)
        accuracy = balanced_accuracy(probe.logits(val_positive), probe.logits(val_negative), 0.0)
        if accuracy > best_accuracy:
            best, best_accuracy = probe, accuracy
    assert best is not None
    return best
