"""The prompts a workflow reads: files or built-ins, overlap removal, splits, the adversarial
condition's system prompts, and the token-budget check."""

from __future__ import annotations

import random
from dataclasses import dataclass, replace

from refusalkit.activations import EncodedBatch, encode_batches
from refusalkit.config import RunConfig, template_kwargs
from refusalkit.models.adapter import ModelAdapter
from refusalkit.models.loading import (
    ResolvedModel,
    context_length,
    load_tokenizer,
)
from refusalkit.prompts.budget import check_token_budget
from refusalkit.prompts.chat import ChatFormat, SystemPrompt, build_chat_format
from refusalkit.prompts.datasets import (
    Prompt,
    PromptSource,
    Splits,
    builtin_prompts,
    load_prompts,
    remove_overlap,
    split_prompts,
)
from refusalkit.runs.records import Adversarial


def load_over_refusal(config: RunConfig) -> tuple[list[Prompt], PromptSource | None]:
    """The safe-but-scary prompts: a seeded sample of ``n_over_refusal`` (default ``n_test``;
    all of them if there are fewer)."""
    wanted = config.n_test if config.n_over_refusal is None else config.n_over_refusal
    if wanted <= 0:
        return [], None
    path = config.over_refusal
    prompts, source = load_prompts(path, config.column) if path else builtin_prompts("over_refusal")
    shuffled = sorted({p.text: p for p in prompts}.values(), key=lambda p: p.sha256)
    random.Random(f"{config.seed}:over_refusal").shuffle(shuffled)
    return shuffled[:wanted], source


@dataclass
class LoadedPrompts:
    """Both prompt classes as read (shared prompts already dropped), and their sources."""

    prompts: dict[str, list[Prompt]]
    sources: dict[str, PromptSource]
    overlap_removed: int


def read_prompt_sets(config: RunConfig) -> LoadedPrompts:
    """Read both prompt classes; fails before any model is loaded. A few prompts in both sets
    are dropped from both; more are refused (:func:`remove_overlap`)."""
    prompts, sources = {}, {}
    for label, path in (("harmful", config.harmful), ("harmless", config.harmless)):
        prompts[label], sources[label] = (
            load_prompts(path, config.column) if path else builtin_prompts(label)
        )
    names = (sources["harmful"].name, sources["harmless"].name)
    prompts["harmful"], prompts["harmless"], shared = remove_overlap(
        prompts["harmful"], prompts["harmless"], names
    )
    return LoadedPrompts(prompts, sources, shared)


def cut_splits(config: RunConfig, loaded: LoadedPrompts) -> dict[str, Splits]:
    return {
        label: split_prompts(
            prompts, config.n_train, config.n_val, config.n_test, config.seed, label
        )
        for label, prompts in loaded.prompts.items()
    }


def split_chat(config: RunConfig, chat: ChatFormat, split: str) -> ChatFormat:
    """The chat format the prompts of ``split`` are rendered with: the adversarial condition's
    system prompt on train/val (the post-instruction tokens do not depend on it)."""
    system = split_systems(config).get(split)
    return chat if system is None else replace(chat, system=system)


def split_batches(
    config: RunConfig, chat: ChatFormat, adapter: ModelAdapter, splits: Splits, split: str
) -> list[EncodedBatch]:
    prompts = getattr(splits, split)
    return encode_batches(
        split_chat(config, chat, split), prompts, config.batch_size, adapter.device
    )


def split_systems(config: RunConfig) -> dict[str, SystemPrompt]:
    """The system prompt that replaces the run's own on some splits: the adversarial one of
    condition A (val) or B (train and val). Test prompts never get it."""
    if config.adversarial_prompt == "none":
        return {}
    adversarial = SystemPrompt.parse(config.adversarial_text)
    splits = ("val",) if config.adversarial_prompt == "val" else ("train", "val")
    return {split: adversarial for split in splits}


def adversarial_record(config: RunConfig) -> Adversarial | None:
    """What ``summary.json``/``comparison.json`` record about the adversarial condition."""
    if config.adversarial_prompt == "none":
        return None
    return Adversarial(
        condition="A" if config.adversarial_prompt == "val" else "B",
        applied_to=sorted(split_systems(config)),
        text=config.adversarial_text,
        test_prompts="evaluated without it",
    )


@dataclass
class PromptInputs:
    splits: dict[str, Splits]
    over_refusal: list[Prompt]


def check_budgets(
    config: RunConfig, resolved: ResolvedModel, loaded: LoadedPrompts, over_refusal: list[Prompt]
) -> None:
    """Every prompt that may be used (all of each file, so the verdict does not depend on the
    seed) must fit the context with the generation budget: needs the tokenizer only."""
    tokenizer = load_tokenizer(resolved, trust_remote_code=config.trust_remote_code)
    chat = build_chat_format(
        tokenizer, SystemPrompt.parse(config.system_prompt), template_kwargs(config)
    )
    context = context_length(resolved, trust_remote_code=config.trust_remote_code)
    prompts = [p for label in ("harmful", "harmless") for p in loaded.prompts[label]]
    check_token_budget(chat, [*prompts, *over_refusal], context, config.max_new_tokens)
