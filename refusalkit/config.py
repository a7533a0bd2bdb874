"""The full configuration of a run: every setting in one dataclass, saved with the run."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from refusalkit.errors import RefusalkitError
from refusalkit.models.registry import DEFAULT_MODEL
from refusalkit.prompts.chat import ADVERSARIAL_SYSTEM_PROMPT

# CPU defaults are smaller than the paper's (180 train / 100 val per class) so that the default
# run finishes in minutes on two cores; ``--paper`` restores the paper's sizes.
ADVERSARIAL_CONDITIONS = ("none", "val", "train+val")
WEAK_ALIGNMENT_MODES = ("none", "two-stage", "direct")
CPU_DEFAULTS = {"n_train": 128, "n_val": 16, "n_test": 64}
# ACE/actadd strengths beyond this push activations to norms no model was trained on (and 1e308
# overflows to inf); the papers sweep α up to about 3.
MAX_ABS_ALPHA = 100.0
PAPER_SIZES = {"n_train": 180, "n_val": 100}


@dataclass
class RunConfig:
    model: str = DEFAULT_MODEL
    harmful: str | None = None  # file path; None = built-in set
    harmless: str | None = None
    column: str | None = None  # prompt column in users' files; None = detect
    system_prompt: str = "none"  # none | default | any text
    selector: str = "cosmic"  # cosmic | refusal-score (Arditi et al., output-based)
    steering: str = "lce"
    n_train: int = CPU_DEFAULTS["n_train"]
    n_val: int = CPU_DEFAULTS["n_val"]
    n_test: int = CPU_DEFAULTS["n_test"]
    max_new_tokens: int = 48
    batch_size: int = 32
    seed: int = 0
    device: str = "auto"
    dtype: str = "auto"
    trust_remote_code: bool = False
    layers_path: str | None = None
    attention_path: str | None = None
    mlp_path: str | None = None
    l_low_fraction: float = 0.1
    l_low_second_half: bool = False
    l_low_layers: list[int] | None = None
    aggregation: str = "mean"
    prune_layer_fraction: float = 0.2
    min_layer: int = 0  # COSMIC drops candidates below it (set by two-stage weak alignment)
    kl_threshold: float = 0.1
    induce_threshold: float = 0.0  # refusal-score selector: drop candidates inducing less
    median_peak_filter: bool = True
    judge: str = "substring"  # headline judge: substring | log-odds | model
    refusal_phrases: str | None = None  # phrase file for the substring judge; None = SPEC §7 list
    judge_model: str | None = None  # local path, embedded name or hub id of a judge model
    judge_model_kind: str = "yes-no"  # yes-no (any instruct model) | guard (Llama-Guard style)
    over_refusal: str | None = None  # safe-but-scary prompts file; None = built-in set
    n_over_refusal: int | None = None  # None = n_test; 0 skips the over-refusal evaluation
    # COSMIC's adversarial complete refusal (SPEC §5): none | val (condition A: the system prompt
    # on the validation prompts) | train+val (condition B: also on the train prompts, so the
    # candidates change too). Test prompts are always evaluated without it.
    adversarial_prompt: str = "none"
    adversarial_text: str = ADVERSARIAL_SYSTEM_PROMPT
    # Weakly aligned models (SPEC §5): none | two-stage | direct, with the ACE addition sweep.
    weak_alignment: str = "none"
    alphas: list[float] = field(default_factory=lambda: [1.0, 2.0, 3.0])
    # COSMIC pick stability: re-select on this many bootstrap resamples of the train prompts.
    stability: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


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
