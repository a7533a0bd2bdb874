"""``refusalkit export RUN_DIR --out DIR``: the run's direction written into the weights of a
Hugging Face model directory that plain ``transformers`` loads, verified against the hooks.

The verification always runs and is written to ``export.json``: the exported model, loaded back
from disk with ``AutoModelForCausalLM.from_pretrained``, against the hooked original — the largest
absolute difference of next-token logits on held-out prompts, and greedy completions compared
with the run's own intervention completions (or, when the run's intervention differs from the
exported edit, with hooked completions generated here).
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from refusalkit.activations import encode_batches, forward
from refusalkit.api import Direction
from refusalkit.config import config_from_dict, template_kwargs
from refusalkit.errors import RefusalkitError
from refusalkit.evaluation.generation import generate
from refusalkit.evaluation.judges import SubstringJudge
from refusalkit.export.weights import ablate_weights, add_bias
from refusalkit.interventions import ActivationAddition, DirectionalAblation, Intervention, applied
from refusalkit.io import read_json, read_jsonl, write_json, write_text
from refusalkit.models.adapter import ModelAdapter, build_adapter
from refusalkit.models.loading import DTYPES, load_resolved, resolve_model_path
from refusalkit.prompts.chat import ChatFormat, SystemPrompt, build_chat_format
from refusalkit.prompts.datasets import Prompt
from refusalkit.runs.identity import model_checksum

EDITS = ("ablation", "addition", "ace")
LOGIT_PROMPTS = 16  # per class: enough to see any systematic difference, cheap to run


def _last_logits(
    adapter: ModelAdapter, chat: ChatFormat, prompts: Sequence[Prompt]
) -> torch.Tensor:
    rows: dict[int, torch.Tensor] = {}
    for batch in encode_batches(chat, prompts, 8, adapter.device):
        logits = forward(adapter, batch, logits=True).last_logits
        assert logits is not None
        for row, index in enumerate(batch.order):
            rows[index] = logits[row].double().cpu()
    return torch.stack([rows[i] for i in range(len(prompts))])


def _run_rows(run_dir: Path, label: str) -> list[dict[str, Any]]:
    path = run_dir / "completions.jsonl"
    if not path.is_file():
        return []
    return [r for r in read_jsonl(path) if r["set"] == label]


def export_run(
    run_dir: Path, out: Path, *, edit: str = "ablation", alpha: float = 1.0,
    dtype: str | None = None, force: bool = False,
) -> dict[str, Any]:  # fmt: skip
    """Write the edited model to ``out`` and return ``export.json``'s record."""
    if edit == "ace":
        raise RefusalkitError(
            "ACE has no exact weight form: its affine part adds (μ⁻·r̂)r̂ minus each input's own "
            "component, which depends on the input; export ablation or addition instead"
        )
    if edit not in EDITS:
        raise RefusalkitError(f"invalid edit '{edit}': use ablation or addition")
    if dtype is not None and dtype not in DTYPES:
        raise RefusalkitError(f"invalid --dtype '{dtype}': use {', '.join(DTYPES)}")
    if (
        not (run_dir / "summary.json").is_file()
        or not (run_dir / "direction.safetensors").is_file()
    ):
        raise RefusalkitError(
            f"{run_dir} is not a finished run directory (no summary.json or direction)"
        )
    if out.exists() and any(out.iterdir()) and not force:
        raise RefusalkitError(f"{out} is not empty: pass --force to replace what is there")
    config = config_from_dict(read_json(run_dir / "config.json"), f"{run_dir}/config.json")
    selection = dict(read_json(run_dir / "selection.json"))
    direction = Direction.load(run_dir)
    assert direction.layer is not None
    resolved = resolve_model_path(config.model)
    adapter, resolved = load_resolved(resolved, device="cpu", dtype="float32",
                                      trust_remote_code=config.trust_remote_code)  # fmt: skip
    # As the run evaluated its test prompts: its system prompt, never the adversarial one.
    system = SystemPrompt.parse(config.system_prompt)
    chat = build_chat_format(adapter.tokenizer, system, template_kwargs(config))
    intervention: Intervention = (
        DirectionalAblation(direction.vector) if edit == "ablation"
        else ActivationAddition(direction.vector, direction.layer, alpha)
    )  # fmt: skip
    label = "harmful" if edit == "ablation" else "harmless"
    rows = _run_rows(run_dir, label)
    prompts = [Prompt(r["prompt"]) for r in rows if r["condition"] == "intervention"]
    run_completions = [r["completion"] for r in rows if r["condition"] == "intervention"]
    baseline_refused = sum(bool(r["refusal"]) for r in rows if r["condition"] == "baseline")
    if not prompts:
        raise RefusalkitError(f"{run_dir} has no {label} test completions to verify against")
    held_out = (
        prompts[:LOGIT_PROMPTS]
        + [
            Prompt(r["prompt"])
            for r in _run_rows(run_dir, "harmful" if label == "harmless" else "harmless")
            if r["condition"] == "intervention"
        ][:LOGIT_PROMPTS]
    )
    with applied(adapter, intervention):
        hooked_logits = _last_logits(adapter, chat, held_out)
    # The run's own intervention completions are the reference when they used the same edit.
    same_edit = selection.get("steering") == "lce" and (edit == "ablation" or alpha == 1.0)
    if not same_edit:
        with applied(adapter, intervention):
            run_completions = [c.text for c in generate(
                adapter, chat, prompts, max_new_tokens=config.max_new_tokens,
                batch_size=config.batch_size, description="export: hooked completions",
            )]  # fmt: skip

    change = (
        ablate_weights(adapter, direction.vector)
        if edit == "ablation"
        else add_bias(adapter, direction.layer, alpha * direction.vector)
    )
    if out.exists() and force:
        shutil.rmtree(out)
    save_dtype = DTYPES[dtype] if dtype else adapter.dtype
    model: Any = adapter.model  # a transformers model: nn.Module does not declare save_pretrained
    model.to(save_dtype)
    model.save_pretrained(out, safe_serialization=True)
    adapter.tokenizer.save_pretrained(out)

    exported = _load_plain(out, adapter.tokenizer, config.model)
    exported_logits = _last_logits(exported, chat, held_out)
    completions = generate(
        exported, chat, prompts, max_new_tokens=config.max_new_tokens,
        batch_size=config.batch_size, description="export: exported model completions",
    )  # fmt: skip
    identical = sum(c.text == ref for c, ref in zip(completions, run_completions, strict=True))
    judge = SubstringJudge()
    record: dict[str, Any] = {
        "edit": edit,
        "alpha": alpha if edit == "addition" else None,
        "max_logit_difference": float((exported_logits - hooked_logits).abs().max()),
        "logit_prompts": len(held_out),
        "completions_identical": identical,
        "completions_compared": len(prompts),
        "completions_reference": "the run's intervention completions"
        if same_edit
        else "hooked completions generated by export",
        "refusal": {
            "set": label,
            "run_baseline_refused": baseline_refused,
            "exported_refused": sum(judge.is_refusal(c.text) for c in completions),
            "n": len(prompts),
            "judge": "substring",
        },
        "weights": change,
        "saved_dtype": str(save_dtype).replace("torch.", ""),
        "source": {
            "model": config.model,
            "checksum": model_checksum(resolved.fingerprint),
            "run_directory": str(run_dir.resolve()),
        },
        "selection": {
            "method": selection.get("method"),
            "steering": selection.get("steering"),
            "position": direction.position,
            "layer": direction.layer,
        },
    }
    write_json(out / "export.json", record)
    write_text(out / "README.md", _model_card(record))
    return record


def _load_plain(out: Path, tokenizer: Any, name: str) -> ModelAdapter:
    """The exported directory as plain transformers loads it (no refusalkit code in the load)."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32)
    model.eval()
    model.requires_grad_(False)
    return build_adapter(model, tokenizer, f"exported {name}")


def _model_card(record: dict[str, Any]) -> str:
    source, selection, refusal = record["source"], record["selection"], record["refusal"]
    edit = record["edit"] + (f" (alpha {record['alpha']:g})" if record["alpha"] is not None else "")
    return "\n".join(
        [
            "---",
            "tags: [refusalkit, refusal-direction]",
            "---",
            f"# {source['model']} with its refusal direction edited into the weights ({edit})",
            "",
            "Written by `refusalkit export`. Load with `AutoModelForCausalLM.from_pretrained(<this "
            "directory>)`; no refusalkit needed.",
            "",
            f"- Source model: `{source['model']}` (content checksum `{source['checksum']}`)",
            f"- Run directory: `{source['run_directory']}`",
            f"- Direction: {selection['method']}-{str(selection['steering']).upper()}, position "
            f"{selection['position']}, layer {selection['layer']}",
            f"- Edit: {edit}; weights: {record['weights']}",
            f"- Saved as {record['saved_dtype']} safetensors",
            "",
            "## Verification (run at export)",
            "",
            f"- Largest next-token logit difference against the hooked original on "
            f"{record['logit_prompts']} held-out prompts: {record['max_logit_difference']:.3g}",
            f"- Greedy completions identical to {record['completions_reference']}: "
            f"{record['completions_identical']} of {record['completions_compared']}",
            f"- Refusal on the run's {refusal['set']} test prompts ({refusal['judge']} judge): "
            f"{refusal['run_baseline_refused']}/{refusal['n']} for the original model, "
            f"{refusal['exported_refused']}/{refusal['n']} for this one",
            "",
            "This model answers requests its source model refuses. It is released for research on "
            "refusal mechanisms; the source model's licence applies.",
            "",
        ]
    )
