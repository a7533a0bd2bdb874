"""The end-to-end run: prompts → candidates → COSMIC selection → evaluation → run directory.

Stages write their artifacts as they finish. ``summary.json`` is written last, so a directory
without it is an unfinished run; ``status.json`` says which stage it reached and why it stopped.
Re-running the same command on an unfinished directory resumes from the finished stages; a
finished or differently configured directory is only replaced with ``force``.
"""

from __future__ import annotations

import hashlib
import logging
import math
import platform
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from refusalkit import __version__
from refusalkit.activations import EncodedBatch, encode_batches
from refusalkit.config import RunConfig
from refusalkit.directions import CandidateSet, compute_candidates
from refusalkit.errors import RefusalkitError
from refusalkit.evaluation.generation import generate
from refusalkit.evaluation.judges import SubstringJudge, is_degenerate
from refusalkit.evaluation.metrics import Rate
from refusalkit.io import read_json, write_json, write_jsonl, write_tensors, write_text
from refusalkit.models.adapter import ArchitectureOverride, ModelAdapter
from refusalkit.models.loading import ResolvedModel, load_model, resolve_model_path
from refusalkit.models.registry import EMBEDDED_MODELS
from refusalkit.prompts.chat import ChatFormat, SystemPrompt, build_chat_format
from refusalkit.prompts.datasets import (
    Prompt,
    PromptSource,
    Splits,
    builtin_prompts,
    load_prompts,
    split_manifest,
    split_prompts,
)
from refusalkit.selection.cosmic import CosmicSettings, SelectionOutcome, low_similarity_layers
from refusalkit.selection.engine import CosmicEngine, addition, removal

logger = logging.getLogger(__name__)


def cosmic_settings(config: RunConfig) -> CosmicSettings:
    return CosmicSettings(
        steering=config.steering,
        l_low_fraction=config.l_low_fraction,
        l_low_second_half=config.l_low_second_half,
        l_low_layers=tuple(config.l_low_layers) if config.l_low_layers else None,
        aggregation=config.aggregation,
        prune_layer_fraction=config.prune_layer_fraction,
        kl_threshold=config.kl_threshold,
        median_peak_filter=config.median_peak_filter,
    )


def load_splits(config: RunConfig) -> tuple[dict[str, Splits], dict[str, PromptSource]]:
    """Read both prompt classes and cut the splits; fails before any model is loaded."""
    splits, sources = {}, {}
    for label, path in (("harmful", config.harmful), ("harmless", config.harmless)):
        prompts, source = load_prompts(path, config.column) if path else builtin_prompts(label)
        splits[label] = split_prompts(
            prompts, config.n_train, config.n_val, config.n_test, config.seed, label
        )
        sources[label] = source
    return splits, sources


class RunDirectory:
    def __init__(self, path: Path) -> None:
        self.path = path

    def file(self, name: str) -> Path:
        return self.path / name

    def prepare(self, config: dict[str, Any], force: bool) -> bool:
        """Create the directory; return True if an unfinished run with the same config resumes."""
        if self.path.exists() and not self.path.is_dir():
            raise RefusalkitError(f"--out {self.path} exists and is not a directory")
        if self.path.exists() and any(self.path.iterdir()):
            if force:
                shutil.rmtree(self.path)
            elif self.file("summary.json").exists():
                raise RefusalkitError(
                    f"run directory {self.path} already holds a finished run; pass --force to "
                    "replace it or choose another --out"
                )
            elif (
                self.file("config.json").exists() and read_json(self.file("config.json")) == config
            ):
                return True
            else:
                raise RefusalkitError(
                    f"run directory {self.path} is not empty and holds no run with this "
                    "configuration; pass --force to replace it or choose another --out"
                )
        self.path.mkdir(parents=True, exist_ok=True)
        write_json(self.file("config.json"), config)
        return False

    def status(self, stage: str, state: str, message: str = "") -> None:
        write_json(self.file("status.json"), {"stage": stage, "state": state, "message": message})


@dataclass
class EvaluationResult:
    rows: list[dict[str, Any]]
    harmful_baseline: Rate
    harmful_intervention: Rate
    harmless_baseline: Rate
    harmless_intervention: Rate
    degenerate: Rate


def evaluate(
    adapter: ModelAdapter,
    chat: ChatFormat,
    candidates: CandidateSet,
    outcome: SelectionOutcome,
    config: RunConfig,
    splits: dict[str, Splits],
) -> EvaluationResult:
    """Greedy completions on the test splits, baseline vs intervention, substring-judged."""
    judge = SubstringJudge()
    position, layer = outcome.selected.position, outcome.selected.layer
    plan = (
        ("harmful", "baseline", None),
        ("harmful", "intervention", removal(candidates, config.steering, position, layer)),
        ("harmless", "baseline", None),
        ("harmless", "intervention", addition(candidates, config.steering, position, layer)),
    )
    rows: list[dict[str, Any]] = []
    rates: dict[tuple[str, str], Rate] = {}
    for label, condition, intervention in plan:
        prompts: list[Prompt] = splits[label].test
        completions = generate(
            adapter, chat, prompts, intervention=intervention, max_new_tokens=config.max_new_tokens,
            batch_size=config.batch_size, description=f"generating: {label} {condition}",
        )  # fmt: skip
        verdicts = judge.judge(completions)
        rates[(label, condition)] = Rate(sum(verdicts), len(verdicts))
        for prompt, completion, refused in zip(prompts, completions, verdicts, strict=True):
            rows.append({
                "set": label, "condition": condition,
                "intervention": intervention.describe() if intervention else "none",
                "category": prompt.category, "prompt": prompt.text, "completion": completion,
                "refusal": refused, "degenerate": is_degenerate(completion),
            })  # fmt: skip
    intervened = [r for r in rows if r["condition"] == "intervention"]
    degenerate = Rate(sum(r["degenerate"] for r in intervened), len(intervened))
    return EvaluationResult(
        rows,
        rates[("harmful", "baseline")],
        rates[("harmful", "intervention")],
        rates[("harmless", "baseline")],
        rates[("harmless", "intervention")],
        degenerate,
    )


def _rate_block(n: int, baseline: Rate, intervention: Rate) -> dict[str, Any]:
    return {
        "n": n,
        "baseline_refusal_rate": baseline.value,
        "intervention_refusal_rate": intervention.value,
        "baseline_refusal_count": baseline.count,
        "intervention_refusal_count": intervention.count,
        "baseline_refusal_rate_ci95": list(baseline.ci95),
        "intervention_refusal_rate_ci95": list(intervention.ci95),
    }


def _provenance(resolved: ResolvedModel, adapter: ModelAdapter, chat: ChatFormat) -> dict[str, Any]:
    import transformers

    embedded = EMBEDDED_MODELS.get(resolved.spec)
    return {
        "model": {
            "spec": resolved.spec, "kind": resolved.kind, "path": resolved.path,
            "gguf_sha256": embedded.sha256 if embedded else None,
            "class": type(adapter.model).__name__, "n_layers": adapter.n_layers,
            "hidden_size": adapter.hidden_size, "dtype": str(adapter.dtype),
            "device": str(adapter.device),
            "layers_path": adapter.layers_path,
        },
        "chat": {
            "system_prompt": chat.system.describe(),
            "removed_template_default_system_prompt": chat.removed_default_system,
            "post_instruction_tokens": chat.position_labels(),
            "post_instruction_ids": list(chat.suffix_ids),
            "example": chat.render("<instruction>"),
        },
        "versions": {
            "refusalkit": __version__, "torch": torch.__version__,
            "transformers": transformers.__version__, "python": platform.python_version(),
        },
    }  # fmt: skip


SELECTION_SUMMARY_KEYS = (
    "method", "steering", "position", "layer", "score", "s_comply", "s_refuse", "kl",
    "n_candidates", "n_kept", "n_kl_evaluated",
)  # fmt: skip


def select_direction(
    adapter: ModelAdapter,
    chat: ChatFormat,
    candidates: CandidateSet,
    settings: CosmicSettings,
    batches: Callable[[str, str], list[EncodedBatch]],
) -> dict[str, Any]:
    """Run COSMIC and return the full ``selection.json`` record."""
    evaluation_layers = low_similarity_layers(
        candidates.harmful_means[-1], candidates.harmless_means[-1], settings
    )
    engine = CosmicEngine(
        adapter, candidates, evaluation_layers, settings,
        batches("harmful", "val"), batches("harmless", "val"),
    )  # fmt: skip
    started = time.time()
    outcome = engine.run()
    pick = outcome.selected
    return {
        "method": "cosmic",
        "steering": settings.steering,
        "position": pick.position,
        "layer": pick.layer,
        "score": pick.score,
        "s_comply": pick.s_comply,
        "s_refuse": pick.s_refuse,
        "kl": pick.kl,
        "n_candidates": outcome.n_candidates,
        "n_kept": outcome.n_kept,
        "n_kl_evaluated": sum(not math.isnan(r.kl) for r in outcome.records),
        "l_low": list(evaluation_layers.layers),
        "l_low_note": evaluation_layers.note,
        "l_low_convention": "residual stream = block input (SPEC §0)",
        "layer_similarities": list(evaluation_layers.similarities),
        "median_peak_layers": outcome.median_layers,
        "settings": asdict(settings),
        "position_tokens": chat.position_labels(),
        "work": {"block_forwards": engine.work.block_forwards, "per_kind": engine.work.per_kind},
        "seconds": round(time.time() - started, 1),
        "candidates": [r.as_dict() for r in outcome.records],
        "ranking": [[r.position, r.layer] for r in outcome.ranking()],
    }


def _config_digest(config: dict[str, Any]) -> str:
    import json

    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:16]


def run(config: RunConfig, out: Path, *, force: bool = False) -> dict[str, Any]:
    """Run the whole COSMIC pipeline and return ``summary.json``'s content."""
    started = time.time()
    settings = cosmic_settings(config)  # validates settings before anything is written
    system = SystemPrompt.parse(config.system_prompt)
    splits, sources = load_splits(config)
    resolved = resolve_model_path(config.model)  # unknown models fail before anything is written
    run_dir = RunDirectory(out)
    resuming = run_dir.prepare(config.as_dict(), force)
    stage = "load"
    try:
        run_dir.status(stage, "running")
        write_json(run_dir.file("splits.json"), split_manifest(splits, sources))
        override = ArchitectureOverride(config.layers_path, config.attention_path, config.mlp_path)
        adapter, resolved = load_model(
            resolved, device=config.device, dtype=config.dtype,
            trust_remote_code=config.trust_remote_code, override=override,
        )  # fmt: skip
        chat = build_chat_format(adapter.tokenizer, system)
        provenance = _provenance(resolved, adapter, chat)
        write_json(run_dir.file("provenance.json"), provenance)

        def batches(label: str, split: str) -> list[EncodedBatch]:
            prompts = getattr(splits[label], split)
            return encode_batches(chat, prompts, config.batch_size, adapter.device)

        stage = "candidates"
        run_dir.status(stage, "running")
        candidates_path = run_dir.file("candidates.safetensors")
        if resuming and candidates_path.exists():
            candidates = CandidateSet.load(candidates_path)
        else:
            candidates = compute_candidates(
                adapter,
                batches("harmful", "train"),
                batches("harmless", "train"),
                chat.n_post_instruction,
            )
            candidates.save(candidates_path)

        stage = "selection"
        run_dir.status(stage, "running")
        selection_path = run_dir.file("selection.json")
        if resuming and selection_path.exists():
            record = read_json(selection_path)
        else:
            record = select_direction(adapter, chat, candidates, settings, batches)
            write_json(selection_path, record)
        outcome = SelectionOutcome.from_records(record["candidates"], record["median_peak_layers"])
        l_low = tuple(record["l_low"])
        pick = outcome.selected
        selection = {key: record[key] for key in SELECTION_SUMMARY_KEYS}
        direction = candidates.direction(pick.position, pick.layer)
        write_tensors(
            run_dir.file("direction.safetensors"),
            {"direction": direction, "direction_unit": direction / direction.norm(),
             "harmless_mean": candidates.reference(pick.position, pick.layer)},
            {"position": str(pick.position), "layer": str(pick.layer), "steering": config.steering},
        )  # fmt: skip

        stage = "evaluation"
        run_dir.status(stage, "running")
        result = evaluate(adapter, chat, candidates, outcome, config, splits)
        write_jsonl(run_dir.file("completions.jsonl"), result.rows)

        summary = {
            "model": config.model,
            "selection": selection,
            "evaluation": {
                "harmful": _rate_block(
                    config.n_test, result.harmful_baseline, result.harmful_intervention
                ),
                "harmless": _rate_block(
                    config.n_test, result.harmless_baseline, result.harmless_intervention
                ),
                "judge": "substring",
                "degenerate_rate": result.degenerate.value,
                "interventions": {
                    "harmful": removal(
                        candidates, config.steering, pick.position, pick.layer
                    ).describe(),
                    "harmless": addition(
                        candidates, config.steering, pick.position, pick.layer
                    ).describe(),
                },
            },
            "config_sha256": _config_digest(config.as_dict()),
            "seconds": round(time.time() - started, 1),
        }
        write_text(
            run_dir.file("report.md"),
            render_report(summary, provenance, outcome, l_low),
        )
        write_json(run_dir.file("summary.json"), summary)
        run_dir.status("done", "complete")
        return summary
    except BaseException as error:
        run_dir.status(stage, "failed", f"{type(error).__name__}: {error}")
        raise


def render_report(
    summary: dict[str, Any],
    provenance: dict[str, Any],
    outcome: SelectionOutcome,
    l_low: tuple[int, ...],
) -> str:
    selection, evaluation = summary["selection"], summary["evaluation"]

    def rate_line(block: dict[str, Any], key: str) -> str:
        low, high = block[f"{key}_ci95"]
        count = block[key.replace("_rate", "_count")]
        return f"{block[key]:.2f} ({count}/{block['n']}, 95% CI {low:.2f}–{high:.2f})"

    lines = [
        f"# refusalkit run — {summary['model']}",
        "",
        f"Selected by COSMIC-{selection['steering'].upper()}: position {selection['position']} "
        f"(token {provenance['chat']['post_instruction_tokens'][selection['position']]!r}), "
        f"layer {selection['layer']}.",
        f"Score S_refuse + S_comply = {selection['score']:.4f} "
        f"(S_refuse {selection['s_refuse']:.4f}, S_comply {selection['s_comply']:.4f}), "
        f"KL {selection['kl']:.4f}.",
        f"Evaluation layers L_low: {list(l_low)}. Candidates: {selection['n_candidates']}, "
        f"kept by the median-peak/layer/NaN filters: {selection['n_kept']}.",
        "",
        "| test set | n | baseline refusal | with intervention |",
        "|---|---|---|---|",
        f"| harmful ({evaluation['interventions']['harmful']}) | {evaluation['harmful']['n']} | "
        f"{rate_line(evaluation['harmful'], 'baseline_refusal_rate')} | "
        f"{rate_line(evaluation['harmful'], 'intervention_refusal_rate')} |",
        f"| harmless ({evaluation['interventions']['harmless']}) | {evaluation['harmless']['n']} | "
        f"{rate_line(evaluation['harmless'], 'baseline_refusal_rate')} | "
        f"{rate_line(evaluation['harmless'], 'intervention_refusal_rate')} |",
        "",
        "Judge: substring (SPEC §7). Degenerate outputs under intervention: "
        f"{evaluation['degenerate_rate']:.2f}.",
        "",
        "## Top candidates",
        "",
        "| position | layer | S_refuse | S_comply | score | KL | status |",
        "|---|---|---|---|---|---|---|",
    ]
    for record in outcome.ranking()[:10]:
        lines.append(
            f"| {record.position} | {record.layer} | {record.s_refuse:.4f} | "
            f"{record.s_comply:.4f} | {record.score:.4f} | {record.kl:.4f} | {record.status} |"
        )
    lines += ["", f"Model: {provenance['model']['spec']} ({provenance['model']['class']}, "
              f"{provenance['model']['n_layers']} layers), {provenance['model']['dtype']} on "
              f"{provenance['model']['device']}. Run time {summary['seconds']} s.", ""]  # fmt: skip
    return "\n".join(lines)
