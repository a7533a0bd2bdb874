"""The Latent Guard (Zhao et al., NeurIPS 2025; SPEC §8): a prompt is harmful iff its harmfulness
belief score — the mean over a layer range of cos(h, harmful centroid) − cos(h, harmless
centroid) — is at least ``tau``. ``h`` is read at ``t_inst`` (the paper's reading) or averaged over
the instruction's tokens (``instruction_mean``), optionally less its component along the
within-class length direction (``length_direction``). One forward over the prompt, no generation,
no extra model.

A guard is bound to the model it was fitted on: ``guard.json`` records the model and the checksum
of its weights, and loading it next to another model is refused.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from refusalkit.config.modes import (
    DEFAULT_GUARD_CENTRING,
    DEFAULT_GUARD_LAYERS,
    DEFAULT_GUARD_LENGTH,
    DEFAULT_GUARD_READING,
)
from refusalkit.errors import RefusalkitError
from refusalkit.harmfulness.beliefs import (
    Threshold,
    belief_scores,
    calibrate_threshold,
    centroid,
    length_direction,
    remove_direction,
)
from refusalkit.harmfulness.features import PromptFeatures, check_reading, read_features
from refusalkit.io import read_json, read_tensors, write_json, write_tensors
from refusalkit.models.adapter import ModelAdapter
from refusalkit.prompts.chat import ChatFormat, SystemPrompt, build_chat_format
from refusalkit.prompts.datasets import Prompt

GUARD_TENSORS = "guard.safetensors"
GUARD_RECORD = "guard.json"
GUARD_FORMAT = 1

# Measured on the default model (README, "Harmfulness is not refusal";
# benchmarks/guard_transfer.py, results 2026-12-05): on 64 + 64 built-in validation prompts the
# instruction mean with centred cosines over the second half of the layers, the length direction
# removed and tau calibrated there measured best of the centroid guards (0.945; 0.875 with the
# length kept); every t_inst setting was lower (at most 0.82) and most fell to 0.500 on another
# style. Raw cosines with tau = 0 and the length kept (the paper's rule) were at most 0.78.
DEFAULT_CENTRED = DEFAULT_GUARD_CENTRING == "centred"
DEFAULT_REMOVE_LENGTH = DEFAULT_GUARD_LENGTH == "removed"


def _features(
    model: ModelAdapter, chat: ChatFormat, prompts: Sequence[str | Prompt], batch_size: int
) -> PromptFeatures:
    if isinstance(prompts, str):
        raise RefusalkitError("pass a list of prompts, not a single string")
    items = [p if isinstance(p, Prompt) else Prompt(p) for p in prompts]
    if not items:
        raise RefusalkitError("an empty prompt list: pass at least one prompt")
    return read_features(model, chat, items, batch_size, "latent guard: reading prompts")


def parse_layer_range(text: str, n_layers: int) -> tuple[int, ...]:
    """``all`` (every layer but 0: block 0's input is the token embedding, no context at all),
    ``A-B`` (inclusive), ``second-half`` or a comma list, checked against the model."""
    if text == "all":
        return tuple(range(1, n_layers))
    if text == "second-half":
        return tuple(range(n_layers // 2, n_layers))
    try:
        if "-" in text and "," not in text:
            first, last = (int(x) for x in text.split("-", 1))
            layers = tuple(range(first, last + 1))
        else:
            layers = tuple(sorted({int(x) for x in text.split(",") if x.strip()}))
    except ValueError:
        raise RefusalkitError(
            f"invalid layer range {text!r}: use all, second-half, A-B or a list such as 4,8,12"
        ) from None
    bad = [layer for layer in layers if not 0 <= layer < n_layers]
    if not layers or bad:
        raise RefusalkitError(f"layer range {text!r}: layers must lie in 0..{n_layers - 1}")
    return layers


@dataclass
class LatentGuard:
    harmful_centroids: torch.Tensor  # [L, d] float64, in `reading`, harmful train prompts
    harmless_centroids: torch.Tensor  # [L, d] float64
    layers: tuple[int, ...]
    centred: bool
    tau: float
    tau_rule: str  # "zero" (the paper's) or "calibrated" (best balanced accuracy on validation)
    reading: str = "t_inst"  # which PromptFeatures reading the centroids were taken from
    model: dict[str, Any] = field(default_factory=dict)  # name, fingerprint: what it was fitted on
    fit_record: dict[str, Any] = field(default_factory=dict)  # counts and validation accuracy
    # [L, d] unit vectors projected out of every reading before the centroids and the cosines
    # (the within-class length direction); None: the activations are read as they are
    length_direction: torch.Tensor | None = None

    @staticmethod
    def from_activations(
        harmful: torch.Tensor,
        harmless: torch.Tensor,
        *,
        layers: Sequence[int],
        centred: bool = DEFAULT_CENTRED,
        reading: str = DEFAULT_GUARD_READING,
        val_harmful: torch.Tensor | None = None,
        val_harmless: torch.Tensor | None = None,
        model: dict[str, Any] | None = None,
        lengths: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> LatentGuard:
        """A guard from activations ``[N, L, d]`` of the named ``reading``; with validation
        activations (same reading) tau is calibrated on them, without it is 0. With ``lengths``
        (each train prompt's instruction token count, harmful then harmless) the within-class
        length direction is projected out of everything the guard reads."""
        direction = None
        if lengths is not None:
            direction = length_direction([(harmful, lengths[0]), (harmless, lengths[1])])
            harmful, harmless = (remove_direction(x, direction) for x in (harmful, harmless))
        guard = LatentGuard(
            centroid(harmful), centroid(harmless), tuple(layers), centred, 0.0, "zero",
            check_reading(reading),
            dict(model or {}), {"n_harmful": len(harmful), "n_harmless": len(harmless)},
            direction,
        )  # fmt: skip
        if val_harmful is not None and val_harmless is not None:
            threshold: Threshold = calibrate_threshold(
                guard.scores_from_activations(val_harmful),
                guard.scores_from_activations(val_harmless),
            )
            guard.tau, guard.tau_rule = threshold.tau, "calibrated"
            guard.fit_record.update(
                n_val_harmful=len(val_harmful),
                n_val_harmless=len(val_harmless),
                val_balanced_accuracy=threshold.balanced_accuracy,
            )
        return guard

    @staticmethod
    def from_features(
        harmful: PromptFeatures,
        harmless: PromptFeatures,
        *,
        layers: Sequence[int],
        centred: bool = DEFAULT_CENTRED,
        reading: str = DEFAULT_GUARD_READING,
        remove_length: bool = DEFAULT_REMOVE_LENGTH,
        val_harmful: PromptFeatures | None = None,
        val_harmless: PromptFeatures | None = None,
        model: dict[str, Any] | None = None,
    ) -> LatentGuard:
        """``from_activations`` on read prompts: their ``reading``, and their instruction token
        counts when ``remove_length``."""
        validation = None
        if val_harmful is not None and val_harmless is not None:
            validation = val_harmful.reading(reading), val_harmless.reading(reading)
        return LatentGuard.from_activations(
            harmful.reading(reading), harmless.reading(reading),
            layers=layers, centred=centred, reading=reading,
            val_harmful=validation[0] if validation else None,
            val_harmless=validation[1] if validation else None,
            model=model,
            lengths=(harmful.instruction_tokens, harmless.instruction_tokens)
            if remove_length else None,
        )  # fmt: skip

    @staticmethod
    def fit(
        model: ModelAdapter,
        harmful: Sequence[str | Prompt],
        harmless: Sequence[str | Prompt],
        *,
        val_harmful: Sequence[str | Prompt] | None = None,
        val_harmless: Sequence[str | Prompt] | None = None,
        layers: Sequence[int] | None = None,
        centred: bool = DEFAULT_CENTRED,
        reading: str = DEFAULT_GUARD_READING,
        remove_length: bool = DEFAULT_REMOVE_LENGTH,
        system: str = "none",
        batch_size: int = 16,
    ) -> LatentGuard:
        """Fit on a loaded model (``refusalkit.load_model``): centroids from ``harmful`` and
        ``harmless`` in ``reading`` (with the within-class length direction projected out when
        ``remove_length``); τ calibrated on the validation prompts when given, else 0."""
        chat = build_chat_format(model.tokenizer, SystemPrompt.parse(system))

        def features(prompts: Sequence[str | Prompt]) -> PromptFeatures:
            return _features(model, chat, prompts, batch_size)

        check_reading(reading)  # before any forward
        validation: tuple[PromptFeatures | None, PromptFeatures | None] = (None, None)
        if val_harmful is not None and val_harmless is not None:
            validation = features(val_harmful), features(val_harmless)
        if layers is None:
            layers = parse_layer_range(DEFAULT_GUARD_LAYERS, model.n_layers)
        return LatentGuard.from_features(
            features(harmful), features(harmless),
            layers=layers, centred=centred, reading=reading, remove_length=remove_length,
            val_harmful=validation[0], val_harmless=validation[1],
            model={"name": model.name, "system_prompt": system},
        )  # fmt: skip

    def score(
        self,
        model: ModelAdapter,
        prompts: Sequence[str | Prompt],
        *,
        system: str | None = None,
        batch_size: int = 16,
    ) -> list[float]:
        """``Δ_harmful`` per prompt (one forward each); ``system`` defaults to the fit's."""
        chosen = system if system is not None else str(self.model.get("system_prompt", "none"))
        chat = build_chat_format(model.tokenizer, SystemPrompt.parse(chosen))
        features = _features(model, chat, prompts, batch_size)
        return [float(s) for s in self.scores_from_features(features)]

    def classify(
        self,
        model: ModelAdapter,
        prompts: Sequence[str | Prompt],
        *,
        system: str | None = None,
        batch_size: int = 16,
    ) -> list[bool]:
        """True where a prompt is judged harmful (``Δ_harmful ≥ τ``)."""
        return [
            s >= self.tau for s in self.score(model, prompts, system=system, batch_size=batch_size)
        ]

    def scores_from_activations(self, activations: torch.Tensor) -> torch.Tensor:
        """``Δ_harmful`` per prompt from its block inputs ``[N, L, d]`` in this guard's reading."""
        if self.length_direction is not None:
            activations = remove_direction(activations, self.length_direction)
        return belief_scores(
            activations, self.harmful_centroids, self.harmless_centroids, self.layers, self.centred
        )

    def scores_from_features(self, features: PromptFeatures) -> torch.Tensor:
        return self.scores_from_activations(features.reading(self.reading))

    def decide(self, scores: torch.Tensor) -> list[bool]:
        return [bool(s >= self.tau) for s in scores]

    def describe(self) -> dict[str, Any]:
        return {
            "format": GUARD_FORMAT,
            "reading": self.reading,
            "layers": list(self.layers),
            "centred": self.centred,
            "length": "kept" if self.length_direction is None else "removed",
            "tau": self.tau,
            "tau_rule": self.tau_rule,
            "model": self.model,
            "fit": self.fit_record,
        }

    def save(self, directory: Path) -> Path:
        directory.mkdir(parents=True, exist_ok=True)
        tensors = {
            "harmful_centroids": self.harmful_centroids,
            "harmless_centroids": self.harmless_centroids,
        }
        if self.length_direction is not None:
            tensors["length_direction"] = self.length_direction
        write_tensors(
            directory / GUARD_TENSORS,
            tensors,
            {"layout": f"[layer (block input, {self.reading}), hidden]"},
        )
        write_json(directory / GUARD_RECORD, self.describe())
        return directory

    @staticmethod
    def load(directory: Path) -> LatentGuard:
        record_path = directory / GUARD_RECORD
        if not record_path.is_file():
            raise RefusalkitError(
                f"{directory} holds no {GUARD_RECORD}: pass a directory written by "
                "'refusalkit guard fit' (or a harmfulness run's guard/ directory)"
            )
        try:
            record = dict(read_json(record_path))
        except (json.JSONDecodeError, ValueError) as error:
            raise RefusalkitError(f"{record_path} is not valid JSON ({error})") from error
        if record.get("format") != GUARD_FORMAT:
            raise RefusalkitError(f"{record_path}: unknown guard format {record.get('format')!r}")
        # guards written before the length option read the activations as they are
        removed = record.get("length") == "removed"
        names = ("harmful_centroids", "harmless_centroids", "length_direction")
        tensors = read_tensors(directory / GUARD_TENSORS, names if removed else names[:2])
        return LatentGuard(
            tensors["harmful_centroids"], tensors["harmless_centroids"],
            tuple(int(x) for x in record["layers"]), bool(record["centred"]),
            float(record["tau"]), str(record["tau_rule"]),
            # guards written before the reading was recorded read t_inst
            str(record.get("reading", "t_inst")), dict(record.get("model") or {}),
            dict(record.get("fit") or {}),
            tensors["length_direction"] if removed else None,
        )  # fmt: skip

    def check_model(self, fingerprint: str | None) -> None:
        """Refuse to score with another model's activations."""
        expected = self.model.get("fingerprint")
        if expected and fingerprint and expected != fingerprint:
            raise RefusalkitError(
                f"this guard was fitted on {self.model.get('name')} (weights {expected[:12]}…), "
                f"not on the model given (weights {fingerprint[:12]}…): fit a guard for it with "
                "'refusalkit guard fit'"
            )
