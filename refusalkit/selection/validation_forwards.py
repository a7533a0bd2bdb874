"""The forwards both scoring engines share: clean passes over the two validation sets, and
intervened forwards that reuse them (COSMIC: :mod:`refusalkit.selection.engine`; output-based:
:mod:`refusalkit.selection.refusal_score_engine`).

Work is limited to what the answer needs (SPEC §10), and every shortcut is exact up to float noise
(``tests/test_engine.py`` checks each against the straightforward ``tests/oracle.py``):

- forwards that only read ``L_low`` stop at the last ``L_low`` layer; forwards that need logits
  compute them at each prompt's last token only;
- single-layer interventions at layer ``l`` (activation addition, ACE) start from the cached clean
  input of block ``l``, and when ``l`` is after every ``L_low`` layer they cannot change the
  readings at all, so the clean readings are used without a forward;
- several candidates share one forward: the validation prompts are repeated once per candidate
  and each copy gets its own direction (``ResidualEdit``), so the per-forward overheads and small
  matrix products of a 16-prompt validation set are paid once for many candidates;
- prompts are packed (``activations.packed_chunks``): no padding, and the token prefix all prompts
  share (the chat template's header) is computed once per row. The packed layout is used only
  when the clean pass gives the same activations as the padded one (models with a short sliding
  window, for example, fail that check and keep padding);
- the last block a forward runs computes its MLP only at the tokens read afterwards (the prompts'
  last tokens), since nothing reads the others (``forward(..., sparse_last_block=True)``).

On CPU a forward is compute-bound, so the wall time follows the token-block count
(``WorkCounter.token_blocks``); ``benchmarks/selection.py`` measures the shortcuts.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import torch
from tqdm.auto import tqdm

from refusalkit.activations import (
    Chunk,
    EncodedBatch,
    first_non_finite,
    forward,
    non_finite_activations,
    packed_chunks,
    padded_chunks,
)
from refusalkit.directions import CandidateSet
from refusalkit.errors import RefusalkitError
from refusalkit.interventions import (
    Intervention,
    ResidualEdit,
    addition,
    applied,
    removal,
)
from refusalkit.models.adapter import ModelAdapter, text_config
from refusalkit.progress import bar

Candidate = tuple[int, int]  # (position, layer)


@dataclass(frozen=True)
class EngineOptions:
    """How the engine spends compute. None of these change a result beyond float noise."""

    # Candidates batched into one forward, as many as fit this many token positions (one copy of
    # the validation prompts per candidate); 0 runs one candidate per forward.
    tokens_per_forward: int = 4096
    # Pack prompts (no padding, shared prefix once) when the model gives the same clean
    # activations that way; rows are capped because attention cost grows with the row length.
    pack_prompts: bool = True
    packed_row_tokens: int = 512
    # The last block a forward runs computes its MLP only at the tokens read afterwards.
    sparse_last_block: bool = True


@dataclass
class WorkCounter:
    """Machine-independent cost. A prompt-forward is one prompt through some blocks;
    ``block_forwards`` = prompts × blocks run (a full prompt-forward is L) and ``token_blocks`` =
    token positions × blocks run (padding included, a shared prefix counted once per row): the
    quantity CPU wall time follows."""

    block_forwards: int = 0
    prompt_forwards: int = 0
    token_blocks: int = 0
    logit_tokens: int = 0  # tokens projected onto the vocabulary
    forwards: int = 0  # model calls
    per_kind: dict[str, int] = field(default_factory=dict)

    def add(
        self, kind: str, prompts: int, blocks: int, tokens: int = 0, logits: bool = False
    ) -> None:
        self.block_forwards += prompts * blocks
        self.prompt_forwards += prompts
        self.token_blocks += tokens * blocks
        self.logit_tokens += prompts if logits else 0
        self.forwards += 1
        self.per_kind[kind] = self.per_kind.get(kind, 0) + prompts * blocks


# -- one intervention per batch row group ------------------------------------------------------


def removal_edits(
    candidates: CandidateSet, steering: str, group: Sequence[Candidate]
) -> ResidualEdit:
    """The removal intervention of each candidate in ``group`` (ACE: all at the same layer), one
    copy of the prompts each."""
    return ResidualEdit.stacked([removal(candidates, steering, p, l).edit() for p, l in group])


def addition_edits(
    candidates: CandidateSet, steering: str, group: Sequence[Candidate], alpha: float = 1.0
) -> ResidualEdit:
    """The addition intervention of each candidate in ``group`` (all at the same layer)."""
    return ResidualEdit.stacked(
        [addition(candidates, steering, p, l, alpha).edit() for p, l in group]
    )


def removal_start(steering: str) -> Callable[[Candidate], int]:
    """The first layer a candidate's removal touches: LCE ablates every layer, ACE edits one."""
    return (lambda _candidate: 0) if steering == "lce" else (lambda candidate: candidate[1])


def grouped(
    todo: Sequence[Candidate], start: Callable[[Candidate], int], size: int
) -> list[list[Candidate]]:
    """Candidates in groups of at most ``size`` that share a start layer (one forward each)."""
    by_start: dict[int, list[Candidate]] = {}
    for candidate in todo:
        by_start.setdefault(start(candidate), []).append(candidate)
    return [
        members[i : i + size]
        for _, members in sorted(by_start.items())
        for i in range(0, len(members), size)
    ]


# -- clean passes and intervened forwards ----------------------------------------------------


@dataclass
class CleanPass:
    """What one clean pass over a validation class provides."""

    chunks: list[Chunk]
    block_inputs: list[dict[int, torch.Tensor]]  # per chunk: layer -> [R, N, d] clean block input
    l_low_means: torch.Tensor  # [|L_low|, d] float64, mean over prompts at their last token
    last_logprobs: list[torch.Tensor] | None  # per chunk [prompts, V] float32 (harmless only)
    last_readings: torch.Tensor  # [prompts, |points|, d] float32, in prompt order
    points: list[int]  # the residual points of last_readings' axis 1
    n_layers: int

    @property
    def batches(self) -> list[EncodedBatch]:
        return [chunk.inputs for chunk in self.chunks]

    @property
    def n_prompts(self) -> int:
        return sum(chunk.n_prompts for chunk in self.chunks)

    @property
    def max_tokens(self) -> int:
        return max(chunk.tokens for chunk in self.chunks)

    def non_finite(self, prompts: str) -> RefusalkitError | None:
        """The error for NaN/inf where the clean pass is read (last-token block inputs, then
        logits), or None. Every score and KL starts from these readings, and a NaN at any token
        reaches the last one through the next block's attention, so a broken model shows here
        without a look at every token."""
        found = first_non_finite(self.last_readings)
        if found is not None:
            point = self.points[found[1]]
            return non_finite_activations(point, "the prompts' last token", prompts, self.n_layers)
        if self.last_logprobs is not None and not all(
            bool(torch.isfinite(logprobs).all()) for logprobs in self.last_logprobs
        ):
            top = min(self.points[-1], self.n_layers - 1)
            return RefusalkitError(
                f"non-finite logits (NaN/inf) at the last token of the {prompts} prompts, though "
                f"the inputs of blocks 0..{top} are finite: block {top} or a later one, the final "
                "norm or the LM head is not; run the model in float32 (--dtype float32) and "
                "check its weights"
            )
        return None


def _gather(readings: torch.Tensor, copies: int) -> torch.Tensor:
    """``[copies·R, C, d]`` readings at the chunk's columns -> ``[copies, R·C, d]``."""
    return readings.reshape(copies, -1, readings.shape[-1])


def packing_blocker(adapter: ModelAdapter, row_tokens: int) -> str | None:
    """Why the packed layout cannot reproduce the padded one on this model, or None.

    A packed row is longer than any single prompt, so a sliding window shorter than the row would
    cut attention that the padded layout keeps (the 4-D mask replaces the model's own masks);
    attention kernels that ignore 4-D masks cannot pack at all. The clean-pass comparison in
    ``ValidationForwards`` is the final check."""
    config = text_config(adapter.model)
    implementation = getattr(config, "_attn_implementation", None)
    if implementation not in ("sdpa", "eager"):
        return f"attention implementation {implementation!r} takes no 4-D mask"
    layer_types = set(getattr(config, "layer_types", None) or [])
    if layer_types - {"full_attention", "sliding_attention"}:
        return f"layer types {sorted(layer_types)}"
    window = getattr(config, "sliding_window", None)
    sliding = "sliding_attention" in layer_types or (
        not layer_types and window is not None and getattr(config, "use_sliding_window", True)
    )
    if sliding and (window is None or window < row_tokens):
        return f"sliding window {window} shorter than a packed row ({row_tokens} tokens)"
    return None


class ValidationForwards:
    """Clean passes over the two validation sets, and intervened forwards that reuse them.

    The clean pass caches every block input an intervention can start at (full sequences), the
    mean block input at each prompt's last token for the ``read_layers`` (COSMIC's ``L_low``), and,
    for the harmless set, last-token log-probs (the KL reference).
    """

    def __init__(
        self,
        adapter: ModelAdapter,
        harmful_val: Sequence[EncodedBatch],
        harmless_val: Sequence[EncodedBatch],
        *,
        cache_up_to: int,
        read_layers: Sequence[int] = (),
        read_before_edits: bool = False,
        options: EngineOptions | None = None,
    ) -> None:
        self.adapter = adapter
        self.options = options or EngineOptions()
        self.read_layers = list(read_layers)  # residual points; n_layers: after the final norm
        # The reference L_low convention reads block outputs: point l + 1 before the edits hooked
        # on block l + 1's input (``forward(read_before_edits=)``).
        self.read_before_edits = read_before_edits
        top = max([cache_up_to, *self.read_layers])
        self.cache_layers = list(range(min(adapter.n_layers, top + 1)))
        # What the clean pass reads at the last token: every cached block input and the L_low
        # points (the final-norm point among them under the reference convention).
        self.clean_points = sorted({*self.cache_layers, *self.read_layers})
        self.work = WorkCounter()
        self.layout, self.layout_note = "padded", "packing off"
        self.harmful = self._clean_pass(padded_chunks(harmful_val), False, "harmful val")
        self.harmless = self._clean_pass(padded_chunks(harmless_val), True, "harmless val")
        for clean, prompts in ((self.harmful, "harmful val"), (self.harmless, "harmless val")):
            error = clean.non_finite(prompts)
            if error is not None:
                raise error
        if self.options.pack_prompts:
            self._try_packing(harmful_val, harmless_val)

    def _try_packing(
        self, harmful_val: Sequence[EncodedBatch], harmless_val: Sequence[EncodedBatch]
    ) -> None:
        """Switch to the packed layout if it reproduces the padded clean pass."""
        dtype, cap = self.adapter.dtype, self.options.packed_row_tokens
        harmful = packed_chunks(harmful_val, cap, dtype)
        harmless = packed_chunks(harmless_val, cap, dtype)
        longest = max(chunk.tokens for chunk in harmful + harmless)
        blocker = packing_blocker(self.adapter, longest)
        if blocker is not None:
            self.layout_note = f"padded: {blocker}"
            return
        packed_harmful = self._clean_pass(harmful, False, "harmful val, packed")
        packed_harmless = self._clean_pass(harmless, True, "harmless val, packed")
        packed = (packed_harmful, packed_harmless)
        if any(clean.non_finite("packed val") is not None for clean in packed):
            # The padded pass is finite, so the packed layout itself broke something.
            self.layout_note = "padded: packed clean pass is not finite"
            return
        error = max(
            _relative_error(packed_harmful.last_readings, self.harmful.last_readings),
            _relative_error(packed_harmless.last_readings, self.harmless.last_readings),
        )
        tolerance = 1e-3 if dtype == torch.float32 else 3e-2
        if error > tolerance:
            self.layout_note = f"padded: packed clean pass differs (relative error {error:.2g})"
            return
        self.harmful, self.harmless = packed_harmful, packed_harmless
        self.layout = "packed"
        self.layout_note = f"packed (clean pass agrees with padded to {error:.1g})"

    def _clean_pass(self, chunks: list[Chunk], logits: bool, label: str) -> CleanPass:
        inputs, logprobs, last = [], [], {}
        total = torch.zeros(len(self.read_layers), self.adapter.hidden_size, dtype=torch.float64)
        progress = bar(f"clean pass: {label}", len(chunks))
        points = self.clean_points
        for chunk in chunks:
            # Before-edit readings matter only under a session-wide edit (a two-stage run's stage
            # 1); cached block inputs are then taken before it too, and re-edited where injected.
            out = forward(
                self.adapter, chunk.inputs, read_layers=points, positions=None,
                logits=logits, logit_columns=chunk.columns,
                read_before_edits=self.read_before_edits,
            )  # fmt: skip
            inputs.append({l: out.readings[l].to(self.adapter.dtype) for l in self.cache_layers})
            # [prompts, |points|, d]: every prompt's last token at every point read
            ends = torch.stack(
                [_gather(out.readings[l][:, chunk.columns], 1)[0] for l in points], 1
            )
            for index, reading in zip(chunk.order, ends, strict=True):
                last[index] = reading.cpu()
            for k, layer in enumerate(self.read_layers):
                total[k] += ends[:, points.index(layer)].double().sum(0).cpu()
            if logits:
                assert out.column_logits is not None
                flat = out.column_logits.reshape(chunk.n_prompts, -1)
                logprobs.append(torch.log_softmax(flat, dim=-1))
            blocks = self.adapter.n_layers if logits else max(points)
            self.work.add("clean", chunk.n_prompts, blocks, chunk.tokens, logits)
            progress.update()
        progress.close()
        count = sum(chunk.n_prompts for chunk in chunks)
        readings = torch.stack([last[i] for i in sorted(last)])
        return CleanPass(
            chunks, inputs, total / count, logprobs if logits else None, readings,
            points, self.adapter.n_layers,
        )  # fmt: skip

    def _start_states(
        self, clean: CleanPass, index: int, start: int, copies: int
    ) -> torch.Tensor | None:
        if start == 0:
            return None
        states = clean.block_inputs[index][start]
        return states.repeat(copies, *([1] * (states.dim() - 1)))

    def copies_per_forward(self, clean: CleanPass) -> int:
        """How many candidates one forward carries (each a copy of the prompts)."""
        budget = self.options.tokens_per_forward
        return max(1, budget // clean.max_tokens) if budget > 0 else 1

    def _repeated(self, chunk: Chunk, copies: int) -> EncodedBatch:
        batch = chunk.inputs
        if copies == 1:
            return batch
        mask = batch.attention_mask
        # A packed chunk's 4-D mask is shared by every copy (it broadcasts over the batch).
        mask = mask if mask.dim() == 4 else mask.repeat(copies, 1)
        return EncodedBatch(
            batch.input_ids.repeat(copies, 1), mask, batch.position_ids.repeat(copies, 1), []
        )

    def reading_means(
        self, clean: CleanPass, edits: ResidualEdit | Intervention, kind: str
    ) -> torch.Tensor:
        """Mean residual stream at the last token for ``read_layers``, ``[copies, |L_low|, d]`` for
        a batched ``ResidualEdit`` (``[|L_low|, d]`` for a single intervention)."""
        if not isinstance(edits, ResidualEdit):
            return self.reading_means(clean, edits.edit(), kind)[0]
        copies, start = edits.copies, edits.first_layer
        # Readings before the first touched layer are the clean ones: only later layers are run.
        # A point read before the edits is untouched by those at its own block.
        means = clean.l_low_means.repeat(copies, 1, 1)
        first_affected = start + 1 if self.read_before_edits else start
        affected = [k for k, layer in enumerate(self.read_layers) if layer >= first_affected]
        if not affected:
            return means
        layers = [self.read_layers[k] for k in affected]
        total = torch.zeros(copies, len(affected), self.adapter.hidden_size, dtype=torch.float64)
        with applied(self.adapter, edits):
            for index, chunk in enumerate(clean.chunks):
                out = forward(
                    self.adapter, self._repeated(chunk, copies), read_layers=layers,
                    positions=chunk.columns, start_layer=start,
                    start_states=self._start_states(clean, index, start, copies),
                    sparse_last_block=self.options.sparse_last_block,
                    read_before_edits=self.read_before_edits,
                )  # fmt: skip
                for j, layer in enumerate(layers):
                    total[:, j] += _gather(out.readings[layer], copies).double().sum(1).cpu()
                self.work.add(
                    kind, copies * chunk.n_prompts, max(layers) - start, copies * chunk.tokens
                )
        means[:, affected] = total / clean.n_prompts
        return means

    def column_logits(
        self, clean: CleanPass, edits: ResidualEdit, kind: str
    ) -> Iterator[tuple[int, torch.Tensor]]:
        """(chunk index, ``[copies, prompts, V]`` last-token logits) under ``edits``."""
        copies, start = edits.copies, edits.first_layer
        with applied(self.adapter, edits):
            for index, chunk in enumerate(clean.chunks):
                out = forward(
                    self.adapter, self._repeated(chunk, copies), logits=True,
                    logit_columns=chunk.columns, start_layer=start,
                    start_states=self._start_states(clean, index, start, copies),
                    sparse_last_block=self.options.sparse_last_block,
                )  # fmt: skip
                assert out.column_logits is not None
                blocks = self.adapter.n_layers - start
                self.work.add(
                    kind, copies * chunk.n_prompts, blocks, copies * chunk.tokens, logits=True
                )
                yield index, _gather(out.column_logits, copies)

    def last_logits(
        self, clean: CleanPass, intervention: Intervention, kind: str
    ) -> Iterator[tuple[int, torch.Tensor]]:
        """(chunk index, ``[prompts, V]`` last-token logits) under one intervention."""
        for index, logits in self.column_logits(clean, intervention.edit(), kind):
            yield index, logits[0]

    def kls(self, edits: ResidualEdit) -> list[float]:
        """Per copy: mean over harmless val of KL(p_clean ‖ p_intervened) at the last token."""
        assert self.harmless.last_logprobs is not None
        total = torch.zeros(edits.copies, dtype=torch.float64)
        for index, logits in self.column_logits(self.harmless, edits, "kl"):
            clean = self.harmless.last_logprobs[index]
            changed = torch.log_softmax(logits, dim=-1)
            total += (clean.exp() * (clean - changed)).sum(-1).double().sum(-1).cpu()
        return [float(t) / self.harmless.n_prompts for t in total]

    def kl(self, intervention: Intervention) -> float:
        """Mean over harmless val of KL(p_clean ‖ p_intervened) at the last prompt position."""
        return self.kls(intervention.edit())[0]


def _relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    """Largest ‖a − b‖ / ‖b‖ over prompts and layers."""
    difference = (a.double() - b.double()).norm(dim=-1)
    return float((difference / b.double().norm(dim=-1).clamp_min(1e-30)).max())


# -- candidates scored in groups, one forward per group -----------------------------------------


def identity_candidates(candidates: CandidateSet) -> torch.Tensor:
    """``[P, L]``: candidates whose direction is exactly zero, so that every intervention built
    from them is the identity (``unit(0) = 0``) and their scores are the clean ones, exactly as a
    forward would give them. Layer 0 at the post-instruction positions is always such a candidate:
    its input is the same token embedding for every prompt. They cannot be a refusal direction:
    this is the zero filter's mask (``select(..., zero=)``). COSMIC scores them from the clean
    pass, which saves the forwards and, more importantly, keeps their exact ties with the clean
    readings (the median-peak filter's argmax breaks ties by layer)."""
    return (candidates.directions == 0).all(-1)


Scorer = Callable[[Sequence[Candidate]], list[float]]


def fill_scores(
    target: torch.Tensor,
    groups: Sequence[Sequence[Candidate]],
    scorer: Scorer,
    progress: tqdm,
) -> None:
    """``target[p, l]`` for every candidate in ``groups``, one ``scorer`` call per group."""
    for group in groups:
        for (p, l), value in zip(group, scorer(group), strict=True):
            target[p, l] = value
        progress.update()


def score_removal_and_addition(
    forwards: ValidationForwards,
    steering: str,
    live: Sequence[Candidate],
    targets: tuple[torch.Tensor, torch.Tensor],
    scorers: tuple[Scorer, Scorer],
    label: str,
) -> None:
    """Both selectors' scoring: ``targets[0]`` from the harmful val prompts under each candidate's
    removal, ``targets[1]`` from the harmless val prompts under its addition; candidates that share
    a start layer go through one forward together."""
    removals = grouped(live, removal_start(steering), forwards.copies_per_forward(forwards.harmful))
    additions = grouped(live, lambda c: c[1], forwards.copies_per_forward(forwards.harmless))
    progress = bar(label, len(removals) + len(additions))
    fill_scores(targets[0], removals, scorers[0], progress)
    fill_scores(targets[1], additions, scorers[1], progress)
    progress.close()
