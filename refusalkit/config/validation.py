"""Validation: the one place a configuration is checked, whether it came from the command line,
a TOML/JSON file or Python."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Any

from refusalkit.config.modes import (
    ADVERSARIAL_CONDITIONS,
    AGGREGATIONS,
    DTYPE_NAMES,
    GUARD_CENTRINGS,
    GUARD_LENGTHS,
    GUARD_READINGS,
    GUARD_TAUS,
    JUDGE_MODEL_KINDS,
    JUDGES,
    L_LOW_CONVENTIONS,
    MAX_ABS_ALPHA,
    SELECTORS,
    STEERINGS,
    WEAK_ALIGNMENT_MODES,
)
from refusalkit.config.run_config import RunConfig
from refusalkit.errors import RefusalkitError
from refusalkit.models.loading import Placement
from refusalkit.prompts.chat import SystemPrompt


def _alternatives(choices: Sequence[str]) -> str:
    return " or ".join(choices) if len(choices) == 2 else ", ".join(choices)


def check_mode(what: str, value: object, choices: Sequence[str]) -> None:
    """``value`` must be one of ``choices`` (a mode's Literal values)."""
    if value not in choices:
        raise RefusalkitError(f"invalid {what} '{value}': use {_alternatives(choices)}")


def check_cosmic(
    steering: str,
    aggregation: str,
    l_low_fraction: float,
    prune_layer_fraction: float,
    kl_threshold: float,
    l_low_convention: str = "block-input",
) -> None:
    """COSMIC's settings; shared with :class:`refusalkit.selection.cosmic.CosmicSettings`."""
    check_mode("steering", steering, STEERINGS)
    check_mode("aggregation", aggregation, AGGREGATIONS)
    check_mode("L_low convention", l_low_convention, L_LOW_CONVENTIONS)
    if not 0 < l_low_fraction <= 1:
        raise RefusalkitError("the L_low fraction must be in (0, 1]")
    if not 0 <= prune_layer_fraction < 1:
        raise RefusalkitError("the prune-layer fraction must be in [0, 1)")
    if kl_threshold < 0:
        raise RefusalkitError("the KL threshold must be non-negative")


def check_numbers(config: RunConfig) -> None:
    """Numeric settings a comparison silently ignores when they are NaN (``kl > nan`` is never
    true, so a NaN threshold disables its filter) or that make no sense: refused with one line."""
    for option, value in (
        ("--kl-threshold", config.kl_threshold),
        ("--induce-threshold", config.induce_threshold),
        ("--l-low-fraction", config.l_low_fraction),
        ("--prune-layer-fraction", config.prune_layer_fraction),
    ):
        if not math.isfinite(value):
            raise RefusalkitError(f"{option} must be a finite number (got {value})")
    for option, count in (
        ("--n-train", config.n_train), ("--n-val", config.n_val), ("--n-test", config.n_test),
        ("--max-new-tokens", config.max_new_tokens), ("--batch-size", config.batch_size),
    ):  # fmt: skip
        if count < 1:
            raise RefusalkitError(f"{option} must be at least 1 (got {count})")
    if config.n_over_refusal is not None and config.n_over_refusal < 0:
        raise RefusalkitError(
            f"--n-over-refusal must be 0 (skip) or more (got {config.n_over_refusal})"
        )
    if config.stability < 0:
        raise RefusalkitError(f"--stability must be 0 (off) or more (got {config.stability})")
    if config.min_layer < 0:
        raise RefusalkitError(f"min_layer must be 0 or more (got {config.min_layer})")
    for alpha in config.alphas:
        if not math.isfinite(alpha) or abs(alpha) > MAX_ABS_ALPHA:
            raise RefusalkitError(
                f"--alphas: {alpha} is not a strength between -{MAX_ABS_ALPHA:g} and "
                f"{MAX_ABS_ALPHA:g} (the papers sweep 1 to 3)"
            )


def _check_hard_cases(config: RunConfig) -> None:
    """SPEC §5's settings and how they combine."""
    check_mode("--adversarial-prompt", config.adversarial_prompt, ADVERSARIAL_CONDITIONS)
    if config.adversarial_prompt != "none":
        SystemPrompt.parse(config.adversarial_text)
    check_mode("--weak-alignment", config.weak_alignment, WEAK_ALIGNMENT_MODES)
    if config.stability and (config.selector != "cosmic" or config.weak_alignment != "none"):
        raise RefusalkitError(
            "--stability re-runs COSMIC selection on resampled train prompts: use it with "
            "--selector cosmic and without --weak-alignment"
        )
    if config.weak_alignment != "none":
        if config.selector != "cosmic":
            raise RefusalkitError(
                "--weak-alignment selects with COSMIC (its point: no refusals needed); "
                "drop --selector"
            )
        if not config.alphas or any(not math.isfinite(a) for a in config.alphas):
            raise RefusalkitError("--alphas needs one or more finite numbers, e.g. 1,2,3")


def writer_pair(config: RunConfig) -> tuple[str, str] | None:
    """``--residual-writers A,B`` as the two module paths (None: found by the probe)."""
    if config.residual_writers is None:
        return None
    names = [name.strip() for name in config.residual_writers.split(",")]
    if len(names) != 2 or not all(names):
        raise RefusalkitError(
            "--residual-writers takes the two modules of a block whose outputs are added to the "
            "residual stream, e.g. post_attention_layernorm,post_feedforward_layernorm"
        )
    return names[0], names[1]


def template_kwargs(config: RunConfig) -> dict[str, Any]:
    """``--chat-template-kwargs`` as a dict (empty when not given)."""
    if config.chat_template_kwargs is None:
        return {}
    try:
        value = json.loads(config.chat_template_kwargs)
    except json.JSONDecodeError as error:
        raise RefusalkitError(f"--chat-template-kwargs is not valid JSON: {error}") from error
    if not isinstance(value, dict):
        raise RefusalkitError('--chat-template-kwargs takes a JSON object, e.g. {"a": 1}')
    return value


def placement(config: RunConfig) -> Placement:
    """``--device-map``/``--max-memory``/``--offload-folder`` as accelerate takes them."""
    device_map: str | dict[str, Any] | None = config.device_map
    text = config.device_map
    if text and text not in ("auto", "balanced", "balanced_low_0", "sequential"):
        try:
            device_map = json.loads(text)
        except json.JSONDecodeError:
            device_map = None
        if not isinstance(device_map, dict):
            raise RefusalkitError(
                "--device-map takes auto (or balanced, sequential) or a JSON object of module -> "
                'device, e.g. {"model.layers.0": 0, "lm_head": "cpu"}'
            )
    memory = None
    if config.max_memory:
        if device_map is None:
            raise RefusalkitError("--max-memory goes with --device-map (e.g. --device-map auto)")
        try:
            memory = json.loads(config.max_memory)
        except json.JSONDecodeError:
            memory = None
        if not isinstance(memory, dict):
            raise RefusalkitError('--max-memory takes a JSON object, e.g. {"0": "20GiB"}')
        # accelerate wants GPU indices as integers; JSON keys are strings.
        memory = {int(k) if str(k).isdigit() else k: v for k, v in memory.items()}
    return Placement(device_map, memory, config.offload_folder)


def validate(config: RunConfig) -> None:
    """Every check of a configuration that needs no file and no model, in one place: numbers,
    every mode against its ``Literal``, COSMIC's settings, the judge, the system prompts, and
    SPEC §5's combinations. Raises :class:`RefusalkitError` with a one-line message. Reading
    the phrase file, the prompt files and the model stay with the run, which needs them anyway."""
    check_numbers(config)
    check_cosmic(
        config.steering,
        config.aggregation,
        config.l_low_fraction,
        config.prune_layer_fraction,
        config.kl_threshold,
        config.l_low_convention,
    )
    check_mode("selector", config.selector, SELECTORS)
    check_mode("judge", config.judge, JUDGES)
    if config.judge == "model" and not config.judge_model:
        raise RefusalkitError("--judge model needs --judge-model PATH (a local instruct model)")
    check_mode("judge model kind", config.judge_model_kind, JUDGE_MODEL_KINDS)
    check_mode("dtype", config.dtype, DTYPE_NAMES)
    check_mode("guard centring", config.guard_centring, GUARD_CENTRINGS)
    check_mode("guard threshold", config.guard_tau, GUARD_TAUS)
    check_mode("guard reading", config.guard_reading, GUARD_READINGS)
    check_mode("guard length", config.guard_length, GUARD_LENGTHS)
    if not math.isfinite(config.inversion_alpha):
        raise RefusalkitError("--inversion-alpha must be a finite number")
    SystemPrompt.parse(config.system_prompt)
    writer_pair(config)
    template_kwargs(config)
    placement(config)
    _check_hard_cases(config)
