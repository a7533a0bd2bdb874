"""The modes of a run, each a ``Literal`` type, and the sizes a run defaults to.

The tuple of a mode's values is derived from its ``Literal``, never retyped, so the command line's
choices, :func:`refusalkit.config.validate` and the type checker agree.
"""

from __future__ import annotations

from typing import Literal, get_args

Selector = Literal["cosmic", "refusal-score", "refusal-substring"]
Steering = Literal["lce", "ace"]
Aggregation = Literal["mean", "concat"]
# Where L_low and the COSMIC readings are taken (SPEC §3.1): block inputs, or block outputs with the
# last one after the final norm, as the reference code's ``hidden_states[1:]``.
LLowConvention = Literal["block-input", "reference"]
Judge = Literal["substring", "log-odds", "model"]
JudgeModelKind = Literal["yes-no", "guard"]
AdversarialCondition = Literal["none", "val", "train+val"]
WeakAlignmentMode = Literal["none", "two-stage", "direct"]
Dtype = Literal["auto", "float32", "bfloat16", "float16"]
# The Latent Guard's score (SPEC §8): raw cosines (the paper's) or centred on the centroids'
# midpoint; its threshold: 0 (the paper's) or calibrated on the validation prompts.
GuardCentring = Literal["centred", "raw"]
GuardTau = Literal["calibrated", "zero"]
# What the guard reads: the mean over the instruction's tokens, or t_inst (the paper's).
GuardReading = Literal["instruction_mean", "t_inst"]
# Whether the guard projects out the direction that tracks the prompt's length within each class
# (removed) or reads the activations as they are (kept, the paper's).
GuardLength = Literal["removed", "kept"]

SELECTORS: tuple[Selector, ...] = get_args(Selector)
STEERINGS: tuple[Steering, ...] = get_args(Steering)
AGGREGATIONS: tuple[Aggregation, ...] = get_args(Aggregation)
L_LOW_CONVENTIONS: tuple[LLowConvention, ...] = get_args(LLowConvention)
JUDGES: tuple[Judge, ...] = get_args(Judge)
JUDGE_MODEL_KINDS: tuple[JudgeModelKind, ...] = get_args(JudgeModelKind)
ADVERSARIAL_CONDITIONS: tuple[AdversarialCondition, ...] = get_args(AdversarialCondition)
WEAK_ALIGNMENT_MODES: tuple[WeakAlignmentMode, ...] = get_args(WeakAlignmentMode)
DTYPE_NAMES: tuple[Dtype, ...] = get_args(Dtype)
GUARD_CENTRINGS: tuple[GuardCentring, ...] = get_args(GuardCentring)
GUARD_TAUS: tuple[GuardTau, ...] = get_args(GuardTau)
GUARD_READINGS: tuple[GuardReading, ...] = get_args(GuardReading)
GUARD_LENGTHS: tuple[GuardLength, ...] = get_args(GuardLength)
# The Latent Guard's defaults, shared by the CLI options and the Python API (why: the comment at
# refusalkit/harmfulness/guard.py and the README, "Harmfulness is not refusal").
DEFAULT_GUARD_READING: GuardReading = "instruction_mean"
DEFAULT_GUARD_LAYERS = "second-half"
DEFAULT_GUARD_CENTRING: GuardCentring = "centred"
DEFAULT_GUARD_LENGTH: GuardLength = "removed"

# CPU defaults are smaller than the paper's (180 train / 100 val per class) so that the default
# run finishes in minutes on two cores; ``--paper`` restores the paper's sizes.
CPU_DEFAULTS = {"n_train": 128, "n_val": 16, "n_test": 64}
# ACE/actadd strengths beyond this push activations to norms no model was trained on (and 1e308
# overflows to inf); the papers sweep α up to about 3.
MAX_ABS_ALPHA = 100.0
PAPER_SIZES = {"n_train": 180, "n_val": 100}
