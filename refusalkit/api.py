"""The notebook API: load a model, extract candidates, select with COSMIC, steer, generate.

Every function takes plain strings and returns plain values; the workflows (``refusalkit run``,
``compare``) are built on the same functions::

    import refusalkit as rk
    model = rk.load_model("qwen2.5-coder-0.5b-instruct")
    cands = rk.extract_candidates(model, harmful_train, harmless_train)
    pick = rk.select_cosmic(model, cands, harmful_val, harmless_val)
    with pick.direction.ablate(model):
        print(rk.generate(model, ["How do I pick a lock?"]))

The chat template's system prompt is ``system``: "none" (the default: no system turn, and a
template's built-in default system prompt is removed, as in a run), "default" (keep the
template's own) or any other text.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from refusalkit.activations import EncodedBatch, encode_batches
from refusalkit.config import L_LOW_CONVENTIONS, LLowConvention, Steering, check_mode
from refusalkit.directions import CandidateSet, compute_candidates
from refusalkit.errors import RefusalkitError
from refusalkit.evaluation.generation import generate as generate_completions
from refusalkit.interventions import (
    ActivationAddition,
    AffineEdit,
    DirectionalAblation,
    applied,
    unit,
)
from refusalkit.io import read_tensor_metadata, read_tensors, write_tensors
from refusalkit.models.adapter import ArchitectureOverride, ModelAdapter, build_adapter
from refusalkit.models.loading import Placement, load_resolved, resolve_model_path
from refusalkit.prompts.chat import ChatFormat, SystemPrompt, build_chat_format
from refusalkit.prompts.datasets import Prompt
from refusalkit.selection.cosmic import (
    CandidateRecord,
    CosmicSettings,
    EvaluationLayers,
    SelectionOutcome,
    low_similarity_layers,
)
from refusalkit.selection.engine import CosmicEngine, WorkCounter

DIRECTION_FILE = "direction.safetensors"
DEFAULT_BATCH_SIZE = 32


def load_model(
    spec: str,
    *,
    device: str = "auto",
    dtype: str = "auto",
    trust_remote_code: bool = False,
    override: ArchitectureOverride | None = None,
    revision: str | None = None,
    device_map: str | dict[str, Any] | None = None,
    max_memory: dict[Any, str] | None = None,
    offload_folder: str | None = None,
) -> ModelAdapter:
    """An embedded model's name, a hub id, a local model directory or a ``.gguf`` file, loaded
    for inference with its architecture discovered (``.model``, ``.tokenizer``, ``.layers``).
    ``device_map`` (``"auto"`` or module -> device) spreads a big model over GPUs, CPU and disk
    with accelerate; interventions follow each hooked module's device."""
    adapter, _ = load_resolved(
        resolve_model_path(spec, revision), device=device, dtype=dtype,
        trust_remote_code=trust_remote_code, override=override,
        placement=Placement(device_map, max_memory, offload_folder),
    )  # fmt: skip
    return adapter


def wrap(
    model: nn.Module, tokenizer: Any, *, override: ArchitectureOverride | None = None
) -> ModelAdapter:
    """A model and tokenizer the caller already loaded, ready for the functions of this module
    (inference mode is the caller's business: call ``model.eval()``)."""
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    name = getattr(getattr(model, "config", None), "_name_or_path", "") or type(model).__name__
    return build_adapter(model, tokenizer, str(name), override)


def chat_format(
    model: ModelAdapter, system: str = "none", template_kwargs: dict[str, Any] | None = None
) -> ChatFormat:
    """How prompts are rendered for ``model``: its chat template, with ``system`` and any extra
    template variables (e.g. ``{"enable_thinking": False}``)."""
    return build_chat_format(model.tokenizer, SystemPrompt.parse(system), template_kwargs)


def _as_prompts(texts: Sequence[str | Prompt]) -> list[Prompt]:
    if isinstance(texts, str):
        raise RefusalkitError("pass a list of prompts, not a single string")
    return [t if isinstance(t, Prompt) else Prompt(t) for t in texts]


def _batches(
    model: ModelAdapter, chat: ChatFormat, texts: Sequence[str | Prompt], batch_size: int
) -> list[EncodedBatch]:
    prompts = _as_prompts(texts)
    if not prompts:
        raise RefusalkitError("an empty prompt list: pass at least one prompt")
    return encode_batches(chat, prompts, batch_size, model.device)


def extract_candidates(
    model: ModelAdapter,
    harmful: Sequence[str | Prompt],
    harmless: Sequence[str | Prompt],
    *,
    system: str = "none",
    batch_size: int = DEFAULT_BATCH_SIZE,
    l_low_convention: LLowConvention = "block-input",
) -> CandidateSet:
    """Difference-in-means candidates at every post-instruction position and layer (SPEC §1);
    ``l_low_convention="reference"`` also keeps the final-norm means that convention reads."""
    check_mode("L_low convention", l_low_convention, L_LOW_CONVENTIONS)
    chat = chat_format(model, system)
    return compute_candidates(
        model,
        _batches(model, chat, harmful, batch_size),
        _batches(model, chat, harmless, batch_size),
        chat.n_post_instruction,
        final_norm=l_low_convention == "reference",
    )


@dataclass(frozen=True)
class Direction:
    """A refusal direction ``r`` and what it needs to be applied: the harmless mean ``μ⁻`` (for
    ACE) and the layer it was selected at (the default layer of ``add`` and ``ace``)."""

    vector: torch.Tensor  # [d] float32
    harmless_mean: torch.Tensor | None = None
    layer: int | None = None
    position: int | None = None
    metadata: dict[str, str] = field(default_factory=dict)

    @property
    def unit(self) -> torch.Tensor:
        return unit(self.vector)

    @staticmethod
    def from_vector(
        vector: torch.Tensor,
        *,
        harmless_mean: torch.Tensor | None = None,
        layer: int | None = None,
    ) -> Direction:
        if vector.dim() != 1 or not bool(torch.isfinite(vector).all()):
            raise RefusalkitError("a direction is one finite vector of the model's hidden size")
        if harmless_mean is not None and harmless_mean.shape != vector.shape:
            raise RefusalkitError(
                f"harmless_mean has shape {tuple(harmless_mean.shape)}, the direction "
                f"{tuple(vector.shape)}"
            )
        mean = None if harmless_mean is None else harmless_mean.detach().float().cpu()
        return Direction(vector.detach().float().cpu(), mean, layer)

    @staticmethod
    def from_candidates(candidates: CandidateSet, position: int, layer: int) -> Direction:
        return Direction(
            candidates.direction(position, layer),
            candidates.reference(position, layer),
            layer,
            position,
        )

    @staticmethod
    def load(path: str | Path) -> Direction:
        """The selected direction of a run directory, or a direction file written by ``save``."""
        file = Path(path).expanduser()
        if file.is_dir():
            file = file / DIRECTION_FILE
        if not file.is_file():
            raise RefusalkitError(
                f"no direction at {path}: pass a finished run directory or a {DIRECTION_FILE}"
            )
        tensors = read_tensors(file, ("direction",))
        metadata = read_tensor_metadata(file)
        layer, position = metadata.get("layer"), metadata.get("position")
        return Direction(
            tensors["direction"].float(),
            tensors["harmless_mean"].float() if "harmless_mean" in tensors else None,
            int(layer) if layer is not None else None,
            int(position) if position is not None else None,
            metadata,
        )

    def save(self, path: str | Path, **metadata: str) -> None:
        tensors = {"direction": self.vector, "direction_unit": self.unit}
        if self.harmless_mean is not None:
            tensors["harmless_mean"] = self.harmless_mean
        where = {"position": self.position, "layer": self.layer}
        written = {k: str(v) for k, v in where.items() if v is not None}
        write_tensors(Path(path), tensors, {**self.metadata, **written, **metadata})

    def _layer(self, layer: int | None) -> int:
        chosen = self.layer if layer is None else layer
        if chosen is None:
            raise RefusalkitError("this direction has no selected layer: pass layer=")
        return chosen

    def ablation(self) -> DirectionalAblation:
        return DirectionalAblation(self.vector)

    def addition(self, alpha: float = 1.0, layer: int | None = None) -> ActivationAddition:
        return ActivationAddition(self.vector, self._layer(layer), alpha)

    def affine_edit(self, alpha: float = 0.0, layer: int | None = None) -> AffineEdit:
        if self.harmless_mean is None:
            raise RefusalkitError(
                "ACE needs the harmless mean: Direction.from_vector(v, harmless_mean=mu)"
            )
        return AffineEdit(self.vector, self.harmless_mean, self._layer(layer), alpha)

    @contextmanager
    def ablate(self, model: ModelAdapter) -> Iterator[None]:
        """Directional ablation at every layer while the block runs; hooks always removed."""
        with applied(model, self.ablation()):
            yield

    @contextmanager
    def add(
        self, model: ModelAdapter, alpha: float = 1.0, layer: int | None = None
    ) -> Iterator[None]:
        """Activation addition ``+α·r`` at the input of ``layer`` (default: the selected one)."""
        with applied(model, self.addition(alpha, layer)):
            yield

    @contextmanager
    def ace(
        self, model: ModelAdapter, alpha: float = 0.0, layer: int | None = None
    ) -> Iterator[None]:
        """Affine concept editing at ``layer``: α = 0 removes refusal, α = 1 induces it."""
        with applied(model, self.affine_edit(alpha, layer)):
            yield


@dataclass(frozen=True)
class CosmicPick:
    """COSMIC's choice and how it was reached: the per-candidate table (``candidates``, with
    scores, KL and the filter that dropped each), ``L_low`` and the machine-independent work."""

    position: int
    layer: int
    score: float
    s_comply: float
    s_refuse: float
    kl: float
    direction: Direction
    steering: str
    candidates: list[CandidateRecord]
    evaluation_layers: EvaluationLayers
    outcome: SelectionOutcome
    settings: CosmicSettings
    work: WorkCounter

    def table(self) -> list[dict[str, Any]]:
        """One row per candidate: position, layer, s_comply, s_refuse, score, kl, status."""
        return [record.as_dict() for record in self.candidates]

    @property
    def n_kl_evaluated(self) -> int:
        return sum(not math.isnan(r.kl) for r in self.candidates)


def run_cosmic(
    model: ModelAdapter,
    candidates: CandidateSet,
    harmful_val: Sequence[EncodedBatch],
    harmless_val: Sequence[EncodedBatch],
    settings: CosmicSettings,
) -> CosmicPick:
    """COSMIC on encoded validation batches (the workflows' entry; ``select_cosmic`` encodes)."""
    evaluation_layers = low_similarity_layers(
        *candidates.last_token_means(settings.l_low_convention), settings
    )
    engine = CosmicEngine(model, candidates, evaluation_layers, settings, harmful_val, harmless_val)
    outcome = engine.run()
    chosen = outcome.selected
    return CosmicPick(
        position=chosen.position,
        layer=chosen.layer,
        score=chosen.score,
        s_comply=chosen.s_comply,
        s_refuse=chosen.s_refuse,
        kl=chosen.kl,
        direction=Direction.from_candidates(candidates, chosen.position, chosen.layer),
        steering=settings.steering,
        candidates=outcome.records,
        evaluation_layers=evaluation_layers,
        outcome=outcome,
        settings=settings,
        work=engine.work,
    )


def select_cosmic(
    model: ModelAdapter,
    candidates: CandidateSet,
    harmful_val: Sequence[str | Prompt],
    harmless_val: Sequence[str | Prompt],
    *,
    steering: Steering = "lce",
    system: str = "none",
    batch_size: int = DEFAULT_BATCH_SIZE,
    settings: CosmicSettings | None = None,
) -> CosmicPick:
    """COSMIC (SPEC §3): the candidate whose removal makes harmful prompts read most like
    harmless ones and whose addition does the converse, among those that pass the filters.
    ``settings`` overrides every other COSMIC setting (its ``steering`` wins over ``steering``)."""
    chosen = settings or CosmicSettings(steering=steering)
    chat = chat_format(model, system)
    return run_cosmic(
        model,
        candidates,
        _batches(model, chat, harmful_val, batch_size),
        _batches(model, chat, harmless_val, batch_size),
        chosen,
    )


def generate(
    model: ModelAdapter,
    prompts: Sequence[str | Prompt],
    *,
    system: str = "none",
    max_new_tokens: int = 64,
    batch_size: int = DEFAULT_BATCH_SIZE,
) -> list[str]:
    """Greedy completions, in order, under whatever interventions are active."""
    chat = chat_format(model, system)
    completions = generate_completions(
        model,
        chat,
        _as_prompts(prompts),
        max_new_tokens=max_new_tokens,
        batch_size=batch_size,
    )
    return [completion.text for completion in completions]
