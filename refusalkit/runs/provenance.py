"""Provenance and identity of a run: what was run, on what, with which software."""

from __future__ import annotations

import platform
from typing import Any

import torch

from refusalkit import __version__
from refusalkit.io import (
    read_json,
    write_json,
)
from refusalkit.models.adapter import ModelAdapter
from refusalkit.models.loading import (
    ResolvedModel,
)
from refusalkit.models.registry import EMBEDDED_MODELS
from refusalkit.prompts.chat import ChatFormat
from refusalkit.runs import RunDirectory
from refusalkit.runs.identity import json_digest


def run_provenance(
    resolved: ResolvedModel, adapter: ModelAdapter, chat: ChatFormat
) -> dict[str, Any]:
    import transformers

    embedded = EMBEDDED_MODELS.get(resolved.spec)
    return {
        "model": {
            "spec": resolved.spec,
            "kind": resolved.kind,
            "path": resolved.path,
            "gguf_sha256": embedded.sha256 if embedded else None,
            # sha256 of every file of the weights' directory (or the hub commit): what ran.
            "identity": resolved.fingerprint,
            "class": type(adapter.model).__name__,
            "n_layers": adapter.n_layers,
            "hidden_size": adapter.hidden_size,
            "dtype": str(adapter.dtype),
            "device": str(adapter.device),
            # Where each part ran when accelerate spread the model (--device-map).
            "device_map": {
                name: str(device)
                for name, device in (getattr(adapter.model, "hf_device_map", None) or {}).items()
            },
            "revision": resolved.revision,
            "layers_path": adapter.layers_path,
            # What directional ablation hooks besides every block input (issue 14).
            "residual_writers": adapter.residual_writers.record(),
        },
        "chat": {
            "system_prompt": chat.system.describe(),
            "template_kwargs": chat.template_kwargs,
            "system_prompt_placement": (
                "system turn" if chat.system_role else "prepended to the user message"
            ),
            "removed_template_default_system_prompt": chat.removed_default_system,
            "post_instruction_tokens": chat.position_labels(),
            "post_instruction_ids": list(chat.suffix_ids),
            "example": chat.render("<instruction>"),
        },
        "versions": {
            "refusalkit": __version__,
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "python": platform.python_version(),
        },
    }


def config_digest(config: dict[str, Any]) -> str:
    return json_digest(config)


def record_hub_commit(
    run_dir: RunDirectory, resolved: ResolvedModel, adapter: ModelAdapter
) -> None:
    """A hub model that was not in the local cache before loading has no commit in the run's
    identity yet; the loaded config knows it, so a later resume compares against it."""
    if resolved.fingerprint.get("kind") != "hub" or resolved.fingerprint.get("commit"):
        return
    commit = getattr(adapter.model.config, "_commit_hash", None)
    inputs = dict(read_json(run_dir.file("inputs.json")))
    inputs["model"] = {**resolved.fingerprint, "commit": commit}
    write_json(run_dir.file("inputs.json"), inputs)
