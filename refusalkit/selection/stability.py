"""Pick stability: would COSMIC pick the same candidate from other train prompts of the same kind?

The train prompts are resampled with replacement (a bootstrap, per class, seeded); each resample's
difference-in-means candidates come from per-prompt activations read once, so a resample costs no
train forward; the selection itself runs with the same engine, validation prompts and settings as
the run's own pick. The share of resamples each candidate wins says how much the pick depends on
which train prompts happened to be drawn: a pick that wins 9 of 10 resamples is a property of the
model; one that wins 2 of 10 is partly a property of the sample.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from refusalkit.activations import EncodedBatch, forward
from refusalkit.directions import CandidateSet
from refusalkit.models.adapter import ModelAdapter
from refusalkit.progress import track
from refusalkit.selection.cosmic import CosmicSettings, low_similarity_layers
from refusalkit.selection.engine import CosmicEngine
from refusalkit.selection.filters import NothingSelected


def per_prompt_activations(
    adapter: ModelAdapter,
    batches: Sequence[EncodedBatch],
    n_positions: int,
    description: str,
    final_norm: bool = False,
) -> torch.Tensor:
    """Block inputs of every prompt at positions ``-P..-1`` and every layer, ``[N, P, L, d]``
    float32 on the CPU, rows in prompt order; with ``final_norm`` one more layer entry, the
    final norm's output (``[N, P, L + 1, d]``), for the reference L_low convention."""
    positions = list(range(-n_positions, 0))
    layers = list(range(adapter.n_layers + (1 if final_norm else 0)))
    rows: dict[int, torch.Tensor] = {}
    for batch in track(batches, description):
        readings = forward(adapter, batch, read_layers=layers, positions=positions).readings
        stacked = torch.stack([readings[l].float().cpu() for l in layers], dim=2)  # [B, P, L, d]
        for row, index in enumerate(batch.order):
            rows[index] = stacked[row]
    return torch.stack([rows[i] for i in range(len(rows))])


def resample_candidates(
    harmful: torch.Tensor, harmless: torch.Tensor, generator: torch.Generator, n_layers: int
) -> CandidateSet:
    """Candidates from one bootstrap resample of each class (float64 means, as the run's); a
    layer entry beyond ``n_layers`` is the final norm's output (``per_prompt_activations``)."""
    pick_harmful = torch.randint(harmful.shape[0], (harmful.shape[0],), generator=generator)
    pick_harmless = torch.randint(harmless.shape[0], (harmless.shape[0],), generator=generator)
    harmful_means = harmful[pick_harmful].double().mean(0)
    harmless_means = harmless[pick_harmless].double().mean(0)
    final = None
    if harmful_means.shape[1] > n_layers:
        final = torch.stack([harmful_means[-1, n_layers], harmless_means[-1, n_layers]])
    return CandidateSet(
        harmful_means[:, :n_layers].contiguous(), harmless_means[:, :n_layers].contiguous(), final
    )


@dataclass(frozen=True)
class Stability:
    resamples: int
    seed: int
    wins: dict[tuple[int, int] | None, int]  # (position, layer) -> resamples won; None: nothing
    pick: tuple[int, int]

    @property
    def pick_share(self) -> float:
        return self.wins.get(self.pick, 0) / self.resamples

    def as_dict(self) -> dict[str, object]:
        ranked = sorted(
            ((key, count) for key, count in self.wins.items() if key is not None),
            key=lambda item: (-item[1], item[0][1], item[0][0]),
        )
        return {
            "resamples": self.resamples,
            "seed": self.seed,
            "pick": {"position": self.pick[0], "layer": self.pick[1]},
            "pick_share": self.pick_share,
            "wins": [
                {"position": p, "layer": l, "count": count, "share": count / self.resamples}
                for (p, l), count in ranked
            ],
            "nothing_selected": self.wins.get(None, 0),
        }


def pick_stability(
    adapter: ModelAdapter,
    harmful_train: torch.Tensor,
    harmless_train: torch.Tensor,
    settings: CosmicSettings,
    harmful_val: Sequence[EncodedBatch],
    harmless_val: Sequence[EncodedBatch],
    *,
    pick: tuple[int, int],
    resamples: int,
    seed: int,
) -> Stability:
    """COSMIC on ``resamples`` bootstrap resamples of the train activations (``[N, P, L, d]``)."""
    generator = torch.Generator().manual_seed(seed)
    wins: Counter[tuple[int, int] | None] = Counter()
    for _ in track(range(resamples), "stability: resamples"):
        candidates = resample_candidates(harmful_train, harmless_train, generator, adapter.n_layers)
        layers = low_similarity_layers(
            *candidates.last_token_means(settings.l_low_convention), settings
        )
        engine = CosmicEngine(adapter, candidates, layers, settings, harmful_val, harmless_val)
        try:
            selected = engine.run().selected
        except NothingSelected:
            wins[None] += 1
            continue
        wins[(selected.position, selected.layer)] += 1
    return Stability(resamples, seed, dict(wins), pick)
