"""``refusalkit guard fit | classify | evaluate``: the Latent Guard as a tool of its own (SPEC §8).

``fit`` reads the train and validation prompts of a run's configuration (the same model, prompt
and split options) and writes a small guard directory (``guard.json`` + ``guard.safetensors``);
``classify`` and ``evaluate`` load the model the guard names, check its weights are the ones it
was fitted on, and read each prompt once.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from refusalkit.config import RunConfig, placement, template_kwargs, validate
from refusalkit.errors import RefusalkitError
from refusalkit.harmfulness.features import PromptFeatures, read_features
from refusalkit.harmfulness.guard import GUARD_RECORD, LatentGuard, parse_layer_range
from refusalkit.harmfulness.metrics import precision_recall, set_accuracy
from refusalkit.io import write_json, write_text
from refusalkit.models.adapter import ModelAdapter
from refusalkit.models.loading import load_resolved, resolve_model_path
from refusalkit.prompts.chat import ChatFormat, SystemPrompt, build_chat_format
from refusalkit.prompts.datasets import load_prompts
from refusalkit.runs.identity import model_checksum
from refusalkit.workflows.inputs import cut_splits, read_prompt_sets


def fit_guard(config: RunConfig, out: Path, *, force: bool = False) -> LatentGuard:
    """Fit on the configuration's train prompts (τ on its validation prompts); save to ``out``."""
    validate(config)
    if (out / GUARD_RECORD).exists() and not force:
        raise RefusalkitError(f"{out} already holds a guard: pass --force to replace it")
    if out.exists() and not out.is_dir():
        raise RefusalkitError(f"{out} is a file: choose a directory for the guard")
    splits = cut_splits(config, read_prompt_sets(config))
    resolved = resolve_model_path(config.model, config.revision)
    adapter, resolved = load_resolved(resolved, device=config.device, dtype=config.dtype,
                                      trust_remote_code=config.trust_remote_code,
                                      placement=placement(config))  # fmt: skip
    kwargs = template_kwargs(config)
    chat = build_chat_format(adapter.tokenizer, SystemPrompt.parse(config.system_prompt), kwargs)
    calibrate = config.guard_tau == "calibrated"

    def features(label: str, split: str) -> PromptFeatures:
        prompts = getattr(splits[label], split)
        return read_features(adapter, chat, prompts, config.batch_size, f"guard: {label} {split}")

    guard = LatentGuard.from_features(
        features("harmful", "train"),
        features("harmless", "train"),
        layers=parse_layer_range(config.guard_layers, adapter.n_layers),
        centred=config.guard_centring == "centred",
        reading=config.guard_reading,
        remove_length=config.guard_length == "removed",
        val_harmful=features("harmful", "val") if calibrate else None,
        val_harmless=features("harmless", "val") if calibrate else None,
        model={
            "name": config.model,
            "fingerprint": model_checksum(resolved.fingerprint),
            "system_prompt": config.system_prompt,
            "chat_template_kwargs": kwargs,
            "dtype": config.dtype,
        },
    )  # fmt: skip
    guard.save(out)
    return guard


def _guard_model(
    guard: LatentGuard, device: str, dtype: str | None
) -> tuple[ModelAdapter, ChatFormat]:
    name = str(guard.model.get("name") or "")
    if not name:
        raise RefusalkitError("the guard names no model: re-fit it with 'refusalkit guard fit'")
    resolved = resolve_model_path(name)
    guard.check_model(model_checksum(resolved.fingerprint))
    adapter, _ = load_resolved(
        resolved, device=device, dtype=dtype or str(guard.model.get("dtype", "auto"))
    )
    chat = build_chat_format(
        adapter.tokenizer,
        SystemPrompt.parse(str(guard.model.get("system_prompt", "none"))),
        dict(guard.model.get("chat_template_kwargs") or {}),
    )
    return adapter, chat


def classify_file(
    guard_dir: Path, file: Path, out: Path | None, *, column: str | None = None,
    device: str = "auto", dtype: str | None = None, batch_size: int = 16,
) -> list[dict[str, Any]]:  # fmt: skip
    """Score every prompt of ``file``: JSONL rows ``{"index", "prompt", "score", "harmful"}`` to
    ``out`` or stdout."""
    guard = LatentGuard.load(guard_dir)
    prompts, _ = load_prompts(file, column)
    adapter, chat = _guard_model(guard, device, dtype)
    scores = guard.scores_from_features(
        read_features(adapter, chat, prompts, batch_size, "guard: prompts")
    )
    rows = [
        {"index": i, "prompt": p.text, "score": float(s), "harmful": bool(s >= guard.tau)}
        for i, (p, s) in enumerate(zip(prompts, scores, strict=True))
    ]
    text = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
    if out is None:
        sys.stdout.write(text)
    else:
        write_text(out, text)
    return rows


def evaluate_files(
    guard_dir: Path, harmful_file: Path, harmless_file: Path, out: Path, *,
    column: str | None = None, device: str = "auto", dtype: str | None = None,
    batch_size: int = 16,
) -> dict[str, Any]:  # fmt: skip
    """``guard-evaluation.json`` in ``out``: accuracy on each file, balanced accuracy, precision
    and recall (with 95% intervals)."""
    guard = LatentGuard.load(guard_dir)
    harmful, _ = load_prompts(harmful_file, column)
    harmless, _ = load_prompts(harmless_file, column)
    adapter, chat = _guard_model(guard, device, dtype)
    flags = {}
    for label, prompts in (("harmful", harmful), ("harmless", harmless)):
        scores = guard.scores_from_features(
            read_features(adapter, chat, prompts, batch_size, f"guard: {label}")
        )
        flags[label] = guard.decide(scores)
    pair = precision_recall(flags["harmful"], flags["harmless"])
    record = {
        "balanced_accuracy": pair["balanced_accuracy"],
        "harmful": set_accuracy(flags["harmful"], True),
        "harmless": set_accuracy(flags["harmless"], False),
        **{key: value for key, value in pair.items() if key != "balanced_accuracy"},
        "guard": guard.describe(),
        "files": {"harmful": str(harmful_file), "harmless": str(harmless_file)},
    }
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "guard-evaluation.json", record)
    return record
