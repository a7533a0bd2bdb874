"""The straightforward COSMIC computation (SPEC §3), kept as a test oracle for the fast engine.

Every candidate at every position and layer, every score, full forwards with no caching, no
early stop and no skipped work, then the filters in the SPEC's order. Slow by design: it is only
run on tiny models and in ``benchmarks/selection.py``, which imports this module (run from the
repository root, or as a script: it puts the root on ``sys.path``). It depends on torch and
refusalkit's data types only (never its interventions or its module discovery: an oracle that
shared them would pass whatever they get wrong), and never on pytest, so it stays usable outside
the test suite. Its interventions are written here from raw torch hooks, on the modules a table of
families names (``WRITERS``), from SPEC §2's formulas.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from refusalkit.activations import EncodedBatch
from refusalkit.directions import CandidateSet
from refusalkit.models.adapter import ModelAdapter

# What each family adds to the residual stream inside a decoder block (read off the transformers
# modelling code): Gemma-2 normalises the attention and MLP outputs before adding them.
WRITERS = {"gemma2": ("post_attention_layernorm", "post_feedforward_layernorm")}
DEFAULT_WRITERS = ("self_attn", "mlp")


def decoder_blocks(model: nn.Module) -> nn.ModuleList:
    """Every family in the tests keeps its blocks at ``model.model.layers``."""
    return model.model.layers  # type: ignore[union-attr,return-value]


def residual_writers(model: nn.Module) -> list[nn.Module]:
    names = WRITERS.get(model.config.model_type, DEFAULT_WRITERS)  # type: ignore[union-attr]
    return [getattr(block, name) for block in decoder_blocks(model) for name in names]


def _hidden_in(args: tuple[Any, ...], kwargs: dict[str, Any]) -> torch.Tensor:
    return args[0] if args else kwargs["hidden_states"]


def _with_hidden(args: tuple[Any, ...], kwargs: dict[str, Any], value: torch.Tensor) -> Any:
    if args:
        return (value, *args[1:]), kwargs
    return args, {**kwargs, "hidden_states": value}


def _project_out(v: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    v32 = v.float()
    return (v32 - (v32 @ u)[..., None] * u).to(v.dtype)


@contextmanager
def intervened(
    model: nn.Module, kind: str, r: torch.Tensor, mu: torch.Tensor, layer: int, alpha: float
) -> Iterator[None]:
    """SPEC §2 with raw hooks. ``ablation``: r̂ projected out of every block input and every
    residual writer's output; ``addition``: ``+ α·r`` at block ``layer``'s input; ``ace``:
    ``v − (v·r̂)r̂ + (μ⁻·r̂)r̂ + α·r`` there."""
    device = next(model.parameters()).device
    r32 = r.float().to(device)
    u = r32 / r32.norm() if bool(r32.any()) else r32
    offset = (mu.float().to(device) @ u) * u + alpha * r32
    blocks, handles = decoder_blocks(model), []

    def pre(edit: Any) -> Any:
        return lambda _m, args, kwargs: _with_hidden(args, kwargs, edit(_hidden_in(args, kwargs)))

    def post(_m: nn.Module, _args: Any, output: Any) -> Any:
        if isinstance(output, torch.Tensor):
            return _project_out(output, u)
        return (_project_out(output[0], u), *output[1:])

    try:
        if kind == "ablation":
            for block in blocks:
                edit = pre(lambda v: _project_out(v, u))
                handles.append(block.register_forward_pre_hook(edit, with_kwargs=True))
            handles += [w.register_forward_hook(post) for w in residual_writers(model)]
        elif kind == "addition":
            edit = pre(lambda v: (v.float() + alpha * r32).to(v.dtype))
            handles.append(blocks[layer].register_forward_pre_hook(edit, with_kwargs=True))
        else:
            edit = pre(lambda v: (_project_out(v, u).float() + offset).to(v.dtype))
            handles.append(blocks[layer].register_forward_pre_hook(edit, with_kwargs=True))
        yield
    finally:
        for handle in handles:
            handle.remove()


def removal_and_addition(steering: str) -> tuple[tuple[str, float], tuple[str, float]]:
    """(kind, α) of a candidate's removal and addition under LCE or ACE steering."""
    if steering == "lce":
        return ("ablation", 0.0), ("addition", 1.0)
    return ("ace", 0.0), ("ace", 1.0)


@dataclass
class OracleResult:
    position: int
    layer: int
    s_comply: torch.Tensor  # [P, L]
    s_refuse: torch.Tensor
    kl: torch.Tensor
    prompt_forwards: int


def _last_token_inputs(
    adapter: ModelAdapter, batches: Sequence[EncodedBatch], convention: str = "block-input"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Block inputs at the last position for every layer, and last-position log-probs; with
    ``convention="reference"`` the block outputs instead, as the COSMIC reference code reads
    them: the model's own ``hidden_states[1:]`` (the last one after the final norm)."""
    if convention == "reference":
        return _last_token_outputs(adapter, batches)
    n_layers = len(decoder_blocks(adapter.model))
    per_layer: list[list[torch.Tensor]] = [[] for _ in range(n_layers)]
    logprobs = []
    for batch in batches:
        captured: dict[int, torch.Tensor] = {}

        def recorder(index: int, store: dict[int, torch.Tensor] = captured):
            def hook(_m, args, kwargs):
                store[index] = (args[0] if args else kwargs["hidden_states"])[:, -1].double()

            return hook

        handles = [
            block.register_forward_pre_hook(recorder(i), with_kwargs=True)
            for i, block in enumerate(decoder_blocks(adapter.model))
        ]
        try:
            with torch.inference_mode():
                logits = adapter.model(
                    input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                    position_ids=batch.position_ids, use_cache=False,
                ).logits  # fmt: skip
        finally:
            for handle in handles:
                handle.remove()
        for i in range(n_layers):
            per_layer[i].append(captured[i])
        logprobs.append(torch.log_softmax(logits[:, -1].float(), dim=-1))
    return torch.stack([torch.cat(x) for x in per_layer]), torch.cat(logprobs)  # [L, N, d], [N, V]


def _last_token_outputs(
    adapter: ModelAdapter, batches: Sequence[EncodedBatch]
) -> tuple[torch.Tensor, torch.Tensor]:
    per_layer: list[list[torch.Tensor]] = []
    logprobs = []
    for batch in batches:
        with torch.inference_mode():
            output = adapter.model(
                input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                position_ids=batch.position_ids, use_cache=False, output_hidden_states=True,
            )  # fmt: skip
        outputs = output.hidden_states[1:]
        per_layer = per_layer or [[] for _ in outputs]
        for i, hidden in enumerate(outputs):
            per_layer[i].append(hidden[:, -1].double())
        logprobs.append(torch.log_softmax(output.logits[:, -1].float(), dim=-1))
    return torch.stack([torch.cat(x) for x in per_layer]), torch.cat(logprobs)


def _unit_mean(inputs: torch.Tensor, layers: Sequence[int], aggregation: str) -> torch.Tensor:
    means = inputs[list(layers)].mean(1)  # [|L_low|, d]
    vector = means.mean(0) if aggregation == "mean" else means.flatten()
    return vector / vector.norm()


def zero_directions(candidates: CandidateSet) -> torch.Tensor:
    """``[P, L]`` bool: candidates whose direction is exactly zero (every intervention built from
    one is the identity). The zero filter drops them, after the median-peak filter."""
    n_pos, n_layers = candidates.n_positions, candidates.n_layers
    return torch.tensor(
        [
            [not bool(candidates.direction(p - n_pos, layer).any()) for layer in range(n_layers)]
            for p in range(n_pos)
        ],
        dtype=torch.bool,
    ).reshape(n_pos, n_layers)


@dataclass
class OracleScores:
    s_comply: torch.Tensor  # [P, L]
    s_refuse: torch.Tensor
    kl: torch.Tensor
    prompt_forwards: int  # each a full forward with logits at every position
    zero: torch.Tensor  # [P, L] bool: the direction is exactly zero


def cosmic_oracle_scores(
    adapter: ModelAdapter,
    candidates: CandidateSet,
    l_low: Sequence[int],
    harmful_val: Sequence[EncodedBatch],
    harmless_val: Sequence[EncodedBatch],
    *,
    steering: str,
    aggregation: str = "mean",
    convention: str = "block-input",
) -> OracleScores:
    """S_comply, S_refuse and KL of every candidate (SPEC §3.2-3), three full forwards each;
    ``convention`` says where L_low is read (``_last_token_inputs``)."""
    n_pos, n_layers = candidates.n_positions, candidates.n_layers
    harmful_clean, _ = _last_token_inputs(adapter, harmful_val, convention)
    harmless_clean, harmless_logprobs = _last_token_inputs(adapter, harmless_val, convention)
    harmful_baseline = _unit_mean(harmful_clean, l_low, aggregation)
    harmless_baseline = _unit_mean(harmless_clean, l_low, aggregation)
    s_comply = torch.zeros(n_pos, n_layers, dtype=torch.float64)
    s_refuse = torch.zeros(n_pos, n_layers, dtype=torch.float64)
    kl = torch.zeros(n_pos, n_layers, dtype=torch.float64)
    n_harmful, n_harmless = sum(b.size for b in harmful_val), sum(b.size for b in harmless_val)
    forwards = n_harmful + n_harmless
    for p in range(n_pos):
        position = p - n_pos
        for layer in range(n_layers):
            r = candidates.direction(position, layer)
            mu = candidates.reference(position, layer)
            (remove, a_remove), (add, a_add) = removal_and_addition(steering)
            with intervened(adapter.model, remove, r, mu, layer, a_remove):
                harmful_removed, _ = _last_token_inputs(adapter, harmful_val, convention)
                _, harmless_removed_logprobs = _last_token_inputs(adapter, harmless_val)
            with intervened(adapter.model, add, r, mu, layer, a_add):
                harmless_added, _ = _last_token_inputs(adapter, harmless_val, convention)
            s_comply[p, layer] = _unit_mean(harmful_removed, l_low, aggregation) @ harmless_baseline
            s_refuse[p, layer] = _unit_mean(harmless_added, l_low, aggregation) @ harmful_baseline
            p_clean = harmless_logprobs.exp()
            kl[p, layer] = (
                (p_clean * (harmless_logprobs - harmless_removed_logprobs)).sum(-1).double().mean()
            )
            forwards += n_harmful + 2 * n_harmless
    return OracleScores(s_comply, s_refuse, kl, forwards, zero_directions(candidates))


def cosmic_oracle_pick(
    scores: OracleScores, *, prune_layer_fraction: float = 0.2, kl_threshold: float = 0.1
) -> tuple[int, int]:
    """Filters in SPEC order (median peak for position -1, zero direction, layer, KL, NaN), then
    the argmax. The zero candidates' scores take part in the median-peak filter's peak layers."""
    s_comply, s_refuse = scores.s_comply, scores.s_refuse
    n_pos, n_layers = s_comply.shape
    keep = torch.ones(n_pos, n_layers, dtype=torch.bool)
    if n_pos > 1:

        def lower_median(rows: torch.Tensor) -> int:
            peaks = sorted(int(x) for x in rows.argmax(dim=1))
            return peaks[(len(peaks) - 1) // 2]

        m_abl, m_add = lower_median(s_comply[:-1]), lower_median(s_refuse[:-1])
        for layer in range(n_layers):
            if layer > m_abl and layer > m_add:
                keep[-1, layer] = False
    keep &= ~scores.zero
    keep[:, math.floor((1 - prune_layer_fraction) * n_layers + 1e-9) :] = False
    keep &= scores.kl <= kl_threshold
    score = s_comply + s_refuse
    keep &= ~torch.isnan(score)
    masked = torch.where(keep, score, torch.tensor(-math.inf, dtype=torch.float64))
    flat = int(masked.argmax())
    return flat // n_layers - n_pos, flat % n_layers


def cosmic_oracle(
    adapter: ModelAdapter,
    candidates: CandidateSet,
    l_low: Sequence[int],
    harmful_val: Sequence[EncodedBatch],
    harmless_val: Sequence[EncodedBatch],
    *,
    steering: str,
    aggregation: str = "mean",
    prune_layer_fraction: float = 0.2,
    kl_threshold: float = 0.1,
) -> OracleResult:
    scores = cosmic_oracle_scores(
        adapter, candidates, l_low, harmful_val, harmless_val,
        steering=steering, aggregation=aggregation,
    )  # fmt: skip
    position, layer = cosmic_oracle_pick(
        scores, prune_layer_fraction=prune_layer_fraction, kl_threshold=kl_threshold
    )
    return OracleResult(
        position, layer, scores.s_comply, scores.s_refuse, scores.kl, scores.prompt_forwards
    )


def l_low_oracle(
    adapter: ModelAdapter,
    harmful_train: Sequence[EncodedBatch],
    harmless_train: Sequence[EncodedBatch],
    *,
    fraction: float = 0.1,
    second_half: bool = False,
    convention: str = "block-input",
) -> tuple[tuple[int, ...], int]:
    """``L_low`` (SPEC §3.1) from its own full forwards over the train prompts, as the reference
    code does (the candidates' forwards already hold the same means); returns the layers and the
    prompt-forwards spent."""
    harmful, _ = _last_token_inputs(adapter, harmful_train, convention)
    harmless, _ = _last_token_inputs(adapter, harmless_train, convention)
    a, b = harmful.mean(1), harmless.mean(1)  # [L, d] float64
    similarity = (a * b).sum(-1) / (a.norm(dim=-1) * b.norm(dim=-1))
    n_layers = len(decoder_blocks(adapter.model))
    pool = range(n_layers // 2, n_layers) if second_half else range(n_layers)
    wanted = max(1, math.floor(fraction * n_layers + 1e-9))
    chosen = sorted(pool, key=lambda l: (float(similarity[l]), l))[:wanted]
    forwards = sum(x.size for x in harmful_train) + sum(x.size for x in harmless_train)
    return tuple(sorted(chosen)), forwards


@dataclass
class RefusalScoreOracleResult:
    position: int
    layer: int
    bypass: torch.Tensor  # [P, L]
    induce: torch.Tensor
    kl: torch.Tensor
    zero: torch.Tensor  # [P, L] bool: the direction is exactly zero


def refusal_score_oracle(
    adapter: ModelAdapter,
    candidates: CandidateSet,
    token_ids: Sequence[int],
    harmful_val: Sequence[EncodedBatch],
    harmless_val: Sequence[EncodedBatch],
    *,
    steering: str,
    prune_layer_fraction: float = 0.2,
    kl_threshold: float = 0.1,
    induce_threshold: float = 0.0,
) -> RefusalScoreOracleResult:
    """SPEC §4 the straightforward way: every candidate, full forwards, then filter and argmin."""

    def log_odds(logprobs: torch.Tensor) -> torch.Tensor:
        p = logprobs.double().exp()[:, list(token_ids)].sum(-1)
        return torch.log(p + 1e-8) - torch.log(1 - p + 1e-8)

    n_pos, n_layers = candidates.n_positions, candidates.n_layers
    _, clean = _last_token_inputs(adapter, harmless_val)
    bypass = torch.zeros(n_pos, n_layers, dtype=torch.float64)
    induce = torch.zeros(n_pos, n_layers, dtype=torch.float64)
    kl = torch.zeros(n_pos, n_layers, dtype=torch.float64)
    for p in range(n_pos):
        for layer in range(n_layers):
            r = candidates.direction(p - n_pos, layer)
            mu = candidates.reference(p - n_pos, layer)
            (remove, a_remove), (add, a_add) = removal_and_addition(steering)
            with intervened(adapter.model, remove, r, mu, layer, a_remove):
                _, harmful_removed = _last_token_inputs(adapter, harmful_val)
                _, harmless_removed = _last_token_inputs(adapter, harmless_val)
            with intervened(adapter.model, add, r, mu, layer, a_add):
                _, harmless_added = _last_token_inputs(adapter, harmless_val)
            bypass[p, layer] = log_odds(harmful_removed).mean()
            induce[p, layer] = log_odds(harmless_added).mean()
            kl[p, layer] = (clean.exp() * (clean - harmless_removed)).sum(-1).double().mean()
    result = RefusalScoreOracleResult(0, 0, bypass, induce, kl, zero_directions(candidates))
    return refusal_score_oracle_pick(
        result, prune_layer_fraction=prune_layer_fraction, kl_threshold=kl_threshold,
        induce_threshold=induce_threshold,
    )  # fmt: skip


def refusal_score_oracle_pick(
    scores: RefusalScoreOracleResult,
    *,
    prune_layer_fraction: float = 0.2,
    kl_threshold: float = 0.1,
    induce_threshold: float = 0.0,
) -> RefusalScoreOracleResult:
    """SPEC §4's filters (zero direction, layer, KL, induce) and ``argmin bypass`` over computed
    scores."""
    n_pos, n_layers = scores.bypass.shape
    keep = ~scores.zero
    keep[:, math.floor((1 - prune_layer_fraction) * n_layers + 1e-9) :] = False
    keep &= scores.kl <= kl_threshold
    keep &= scores.induce >= induce_threshold
    masked = torch.where(keep, scores.bypass, torch.tensor(math.inf, dtype=torch.float64))
    flat = int(masked.argmin())
    return RefusalScoreOracleResult(
        flat // n_layers - n_pos, flat % n_layers, scores.bypass, scores.induce, scores.kl,
        scores.zero,
    )  # fmt: skip
