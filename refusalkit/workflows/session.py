"""A workflow's start and its loaded state: validate everything, open the run directory, load the
model, compute (or reload) the candidates."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from refusalkit.activations import EncodedBatch
from refusalkit.config import (
    RunConfig,
    Steering,
    placement,
    template_kwargs,
    validate,
    writer_pair,
)
from refusalkit.directions import CandidateSet, compute_candidates
from refusalkit.evaluation.judges import SubstringJudge, load_model_judge, read_phrase_file
from refusalkit.evaluation.suite import (
    JudgePanel,
)
from refusalkit.io import (
    write_json,
)
from refusalkit.models.adapter import ArchitectureOverride, ModelAdapter
from refusalkit.models.loading import (
    ResolvedModel,
    load_resolved,
    resolve_model_path,
)
from refusalkit.prompts.chat import ChatFormat, SystemPrompt, build_chat_format
from refusalkit.prompts.datasets import (
    Prompt,
    PromptSource,
    Splits,
    split_manifest,
)
from refusalkit.runs import RunDirectory, check_output_path
from refusalkit.runs.provenance import record_hub_commit, run_provenance
from refusalkit.selection.cosmic import CosmicSettings
from refusalkit.selection.refusal_score import (
    refusal_tokens,
)
from refusalkit.workflows.inputs import (
    LoadedPrompts,
    PromptInputs,
    check_budgets,
    cut_splits,
    load_over_refusal,
    read_prompt_sets,
    split_batches,
    split_chat,
)
from refusalkit.workflows.prompt_filter import filter_prompts


def cosmic_settings(config: RunConfig, steering: Steering | None = None) -> CosmicSettings:
    return CosmicSettings(
        steering=steering or config.steering,
        l_low_fraction=config.l_low_fraction,
        l_low_second_half=config.l_low_second_half,
        l_low_layers=tuple(config.l_low_layers) if config.l_low_layers else None,
        aggregation=config.aggregation,
        prune_layer_fraction=config.prune_layer_fraction,
        min_layer=config.min_layer,
        kl_threshold=config.kl_threshold,
        median_peak_filter=config.median_peak_filter,
        l_low_convention=config.l_low_convention,
    )


@dataclass
class Session:
    """Everything the stages after loading need: model, chat format, splits, candidates."""

    config: RunConfig
    adapter: ModelAdapter
    chat: ChatFormat
    splits: dict[str, Splits]
    candidates: CandidateSet
    provenance: dict[str, Any]
    panel: JudgePanel
    over_refusal: list[Prompt]

    def chat_for(self, split: str) -> ChatFormat:
        return split_chat(self.config, self.chat, split)

    def batches(self, label: str, split: str) -> list[EncodedBatch]:
        return split_batches(self.config, self.chat, self.adapter, self.splits[label], split)


def start_run(
    config: RunConfig, out: Path, force: bool, workflow: str
) -> tuple[RunDirectory, ResolvedModel, PromptInputs, bool]:
    """Validate everything that can be validated before a file is written — settings, the output
    path, prompt files, the model's identity, every prompt's token budget — then open (create,
    resume or replace) and lock the run directory. Nothing of an existing run directory is touched
    before every input has passed."""
    validate(config)
    if config.refusal_phrases:
        read_phrase_file(config.refusal_phrases)
    check_output_path(out)
    loaded = read_prompt_sets(config)
    splits = cut_splits(config, loaded)
    over_refusal, over_source = load_over_refusal(config)
    # Unknown models fail before anything is written.
    resolved = resolve_model_path(config.model, config.revision)
    check_budgets(config, resolved, loaded, over_refusal)
    identity = run_identity(workflow, config, loaded, over_source, resolved)
    result = "comparison.json" if workflow == "compare" else "summary.json"
    run_dir = RunDirectory.open(out, identity, result_file=result, force=force)
    try:
        manifest = split_manifest(splits, loaded.sources)
        manifest["overlap_removed"] = loaded.overlap_removed
        if over_source is not None:
            manifest["over_refusal"] = {
                "source": over_source.name,
                "source_sha256": over_source.sha256,
                "column": over_source.column,
                "prompts": [
                    {"sha256": p.sha256, "category": p.category, "text": p.text}
                    for p in over_refusal
                ],
            }
        write_json(run_dir.file("splits.json"), manifest)
    except BaseException:
        run_dir.close()
        raise
    resuming = run_dir.resumed_from is not None
    return run_dir, resolved, PromptInputs(splits, over_refusal), resuming


def open_session(
    config: RunConfig,
    run_dir: RunDirectory,
    resolved: ResolvedModel,
    inputs: PromptInputs,
    resuming: bool,
) -> Session:
    """Load the model and compute (or, when resuming, reload) the candidate directions."""
    adapter, chat, panel, provenance = load_model(config, run_dir, resolved)
    splits = inputs.splits
    if config.filter_prompts:
        run_dir.status("prompt-filter", "running")
        splits, record = filter_prompts(config, chat, adapter, splits)
        write_json(run_dir.file("prompt-filter.json"), record)
    run_dir.status("candidates", "running")
    path = run_dir.file("candidates.safetensors")
    candidates = train_candidates(config, chat, adapter, splits, path, resuming)
    return Session(
        config, adapter, chat, splits, candidates, provenance, panel, inputs.over_refusal
    )


def load_model(
    config: RunConfig, run_dir: RunDirectory, resolved: ResolvedModel
) -> tuple[ModelAdapter, ChatFormat, JudgePanel, dict[str, Any]]:
    """The model, its chat format, the judges and the provenance (written to the run
    directory): what every workflow needs before its own stages."""
    override = ArchitectureOverride(
        config.layers_path, config.attention_path, config.mlp_path, writer_pair(config)
    )
    adapter, resolved = load_resolved(
        resolved,
        device=config.device,
        dtype=config.dtype,
        trust_remote_code=config.trust_remote_code,
        override=override,
        placement=placement(config),
    )
    record_hub_commit(run_dir, resolved, adapter)
    chat = build_chat_format(
        adapter.tokenizer, SystemPrompt.parse(config.system_prompt), template_kwargs(config)
    )
    panel = judge_panel(config, adapter)
    provenance = run_provenance(resolved, adapter, chat)
    write_json(run_dir.file("provenance.json"), provenance)
    return adapter, chat, panel, provenance


def train_candidates(
    config: RunConfig,
    chat: ChatFormat,
    adapter: ModelAdapter,
    splits: dict[str, Splits],
    path: Path,
    resuming: bool,
) -> CandidateSet:
    """Difference-in-means candidates from the train prompts, under whatever hooks are active
    (the stage-1 edit of a two-stage run); reloaded from ``path`` when resuming."""
    if resuming and path.exists():
        return CandidateSet.load(path)
    candidates = compute_candidates(
        adapter,
        split_batches(config, chat, adapter, splits["harmful"], "train"),
        split_batches(config, chat, adapter, splits["harmless"], "train"),
        chat.n_post_instruction,
        final_norm=config.l_low_convention == "reference",
    )
    candidates.save(path)
    return candidates


def judge_panel(config: RunConfig, adapter: ModelAdapter) -> JudgePanel:
    """Every judge the configuration asks for; the judge model is loaded here, once."""
    phrases = read_phrase_file(config.refusal_phrases) if config.refusal_phrases else None
    substring = SubstringJudge(phrases) if phrases else SubstringJudge()
    model = (
        load_model_judge(config.judge_model, config.judge_model_kind, config.device)
        if config.judge_model
        else None
    )
    primary = model.name if config.judge == "model" and model else config.judge
    tokens = refusal_tokens(adapter.tokenizer)
    return JudgePanel(substring, tokens.ids, model, primary)


def run_identity(
    workflow: str,
    config: RunConfig,
    loaded: LoadedPrompts,
    over_source: PromptSource | None,
    resolved: ResolvedModel,
) -> dict[str, Any]:
    """The resume key: the workflow, every setting, and the content of every input."""
    phrases = (
        hashlib.sha256(Path(config.refusal_phrases).expanduser().read_bytes()).hexdigest()
        if config.refusal_phrases
        else None
    )
    return {
        "config": config.as_dict(),
        "workflow": workflow,
        "harmful_prompts": loaded.sources["harmful"].sha256,
        "harmless_prompts": loaded.sources["harmless"].sha256,
        "over_refusal_prompts": over_source.sha256 if over_source else None,
        "refusal_phrases": phrases,
        "model": resolved.fingerprint,
        # The judge model's verdicts are part of a resumed evaluation: its contents count too.
        "judge_model": (
            resolve_model_path(config.judge_model).fingerprint if config.judge_model else None
        ),
    }
