"""SPEC §4's optional data filter (``--filter-prompts``), as Arditi et al. apply it: keep the
harmful train/val prompts the model refuses and the harmless ones it does not, judged by the
refusal score at the first response position (log-odds of the refusal tokens, > 0 for harmful,
< 0 for harmless). Test prompts are never filtered: the evaluation measures the model as it is."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

from refusalkit.activations import EncodedBatch, forward
from refusalkit.config import RunConfig
from refusalkit.errors import RefusalkitError
from refusalkit.models.adapter import ModelAdapter
from refusalkit.progress import track
from refusalkit.prompts.chat import ChatFormat
from refusalkit.prompts.datasets import Splits
from refusalkit.selection.refusal_score import refusal_log_odds, refusal_tokens
from refusalkit.workflows.inputs import split_batches

FILTERED_SPLITS = ("train", "val")
KEEP: dict[str, Callable[[float], bool]] = {
    "harmful": lambda score: score > 0,
    "harmless": lambda score: score < 0,
}


def refusal_scores(
    adapter: ModelAdapter, batches: Sequence[EncodedBatch], token_ids: Sequence[int], what: str
) -> list[float]:
    """The refusal score of every prompt, in prompt order."""
    scores: dict[int, float] = {}
    for batch in track(batches, f"prompt filter: {what}"):
        logits = forward(adapter, batch, logits=True).last_logits
        assert logits is not None
        for row, value in zip(batch.order, refusal_log_odds(logits, token_ids), strict=True):
            scores[row] = float(value)
    return [scores[i] for i in range(len(scores))]


def filter_prompts(
    config: RunConfig, chat: ChatFormat, adapter: ModelAdapter, splits: dict[str, Splits]
) -> tuple[dict[str, Splits], dict[str, Any]]:
    """The filtered splits and ``prompt-filter.json``'s record (the counts kept and dropped)."""
    tokens = refusal_tokens(adapter.tokenizer)
    record: dict[str, Any] = {
        "rule": "keep harmful prompts with refusal score > 0 and harmless < 0 (SPEC §4)",
        "refusal_tokens": list(tokens.strings),
        "splits": list(FILTERED_SPLITS),
        "kept": {},
        "dropped": {},
    }
    filtered: dict[str, Splits] = dict(splits)
    for label, keep in KEEP.items():
        parts = {}
        for split in FILTERED_SPLITS:
            prompts = getattr(splits[label], split)
            batches = split_batches(config, chat, adapter, splits[label], split)
            scores = refusal_scores(adapter, batches, tokens.ids, f"{label} {split}")
            kept = [p for p, score in zip(prompts, scores, strict=True) if keep(score)]
            if not kept:
                refused = "refuses none" if label == "harmful" else "refuses every one"
                raise RefusalkitError(
                    f"--filter-prompts dropped all {len(prompts)} {label} {split} prompts: the "
                    f"model {refused} of them by its first response token; run without "
                    "--filter-prompts (COSMIC needs no refusals)"
                )
            parts[split] = kept
            record["kept"][f"{label}_{split}"] = len(kept)
            record["dropped"][f"{label}_{split}"] = len(prompts) - len(kept)
        filtered[label] = replace(splits[label], **parts)
    return filtered, record
