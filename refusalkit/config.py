"""The full configuration of a run: every setting in one dataclass, saved with the run.

Each mode is a ``Literal`` type, each setting carries its command-line metadata (flag, help text,
value parser; choices come from the ``Literal``), so :mod:`refusalkit.cli` generates its parser
from :class:`RunConfig` instead of mapping options by hand, and :func:`validate` is the one place
that checks a configuration — whether it came from the command line, a TOML/JSON file (a run
directory's ``config.json`` included) or Python.
"""

from __future__ import annotations

import argparse
import difflib
import json
import math
import tomllib
import types
from collections.abc import Callable, Mapping, Sequence
from dataclasses import MISSING, Field, asdict, dataclass, field, fields
from functools import cache
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

from refusalkit.errors import RefusalkitError
from refusalkit.models.registry import DEFAULT_MODEL, EMBEDDED_MODELS
from refusalkit.prompts.chat import ADVERSARIAL_SYSTEM_PROMPT, SystemPrompt

# --- modes: each a Literal type; the tuple of its values is derived from it, never retyped -------

Selector = Literal["cosmic", "refusal-score", "refusal-substring"]
Steering = Literal["lce", "ace"]
Aggregation = Literal["mean", "concat"]
Judge = Literal["substring", "log-odds", "model"]
JudgeModelKind = Literal["yes-no", "guard"]
AdversarialCondition = Literal["none", "val", "train+val"]
WeakAlignmentMode = Literal["none", "two-stage", "direct"]
Dtype = Literal["auto", "float32", "bfloat16", "float16"]

SELECTORS: tuple[Selector, ...] = get_args(Selector)
STEERINGS: tuple[Steering, ...] = get_args(Steering)
AGGREGATIONS: tuple[Aggregation, ...] = get_args(Aggregation)
JUDGES: tuple[Judge, ...] = get_args(Judge)
JUDGE_MODEL_KINDS: tuple[JudgeModelKind, ...] = get_args(JudgeModelKind)
ADVERSARIAL_CONDITIONS: tuple[AdversarialCondition, ...] = get_args(AdversarialCondition)
WEAK_ALIGNMENT_MODES: tuple[WeakAlignmentMode, ...] = get_args(WeakAlignmentMode)
DTYPE_NAMES: tuple[Dtype, ...] = get_args(Dtype)

# CPU defaults are smaller than the paper's (180 train / 100 val per class) so that the default
# run finishes in minutes on two cores; ``--paper`` restores the paper's sizes.
CPU_DEFAULTS = {"n_train": 128, "n_val": 16, "n_test": 64}
# ACE/actadd strengths beyond this push activations to norms no model was trained on (and 1e308
# overflows to inf); the papers sweep α up to about 3.
MAX_ABS_ALPHA = 100.0
PAPER_SIZES = {"n_train": 180, "n_val": 100}

# --- value parsers of command-line options (argparse shows their messages as they are) ----------


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got '{text}'") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected 0 or a positive integer, got '{text}'"
        ) from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected 0 or a positive integer, got {value}")
    return value


def finite_number(text: str) -> float:
    """A finite number: NaN would silently disable a threshold (``x > nan`` is never true)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got '{text}'") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got '{text}'")
    return value


def layer_list(text: str) -> list[int]:
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated layer numbers, got '{text}'"
        ) from None


def number_list(text: str) -> list[float]:
    try:
        values = [finite_number(part) for part in text.split(",") if part.strip()]
    except (ValueError, argparse.ArgumentTypeError):
        raise argparse.ArgumentTypeError(
            f"expected comma-separated numbers, got '{text}'"
        ) from None
    if not values:
        raise argparse.ArgumentTypeError("expected at least one number")
    return values


# --- command-line metadata of a setting ----------------------------------------------------------

# Option groups of `run --help`, in the order they are shown.
DATA, SIZES, SELECTION, HARD_CASES, EVALUATION, RUNTIME = (
    "model and data",
    "sizes (per class)",
    "selection",
    "hard cases (SPEC §5)",
    "evaluation",
    "runtime",
)
OPTION_GROUPS = (DATA, SIZES, SELECTION, HARD_CASES, EVALUATION, RUNTIME)
_OPTION = "refusalkit.option"  # the key of CliOption in a dataclass field's metadata


@dataclass(frozen=True)
class CliOption:
    """How one :class:`RunConfig` field appears on the command line. ``%(default)s`` in ``help``
    is the field's default; choices are the values of the field's ``Literal`` type."""

    flag: str
    help: str
    group: str
    parse: Callable[[str], Any] | None = None  # None: the text as given
    metavar: str | None = None
    switch: bool | None = None  # a flag without a value that sets the field to this
    run_only: bool = False  # `compare` runs every selector/steering itself: not one of its options


def cli_option(
    flag: str,
    group: str,
    *,
    help: str,
    parse: Callable[[str], Any] | None = None,
    metavar: str | None = None,
    switch: bool | None = None,
    run_only: bool = False,
) -> dict[str, CliOption]:
    """A dataclass field's metadata that makes the field a command-line option."""
    return {_OPTION: CliOption(flag, help, group, parse, metavar, switch, run_only)}


@dataclass
class RunConfig:
    model: str = field(
        default=DEFAULT_MODEL,
        metadata=cli_option(
            "--model",
            DATA,
            help=f"embedded model ({', '.join(EMBEDDED_MODELS)}), local model directory, "
            ".gguf file or hub id (default: %(default)s)",
        ),
    )
    # Prompt files (None: the built-in sets) and their prompt column (None: detected).
    harmful: str | None = field(
        default=None,
        metadata=cli_option(
            "--harmful",
            DATA,
            metavar="FILE",
            help="harmful prompts (.txt/.csv/.json/.jsonl); default: built-in set",
        ),
    )
    harmless: str | None = field(
        default=None,
        metadata=cli_option(
            "--harmless", DATA, metavar="FILE", help="harmless prompts; default: built-in set"
        ),
    )
    column: str | None = field(
        default=None,
        metadata=cli_option(
            "--column", DATA, help="prompt column in --harmful/--harmless files (default: detected)"
        ),
    )
    system_prompt: str = field(
        default="none",
        metadata=cli_option(
            "--system-prompt",
            DATA,
            help="'none' (papers' setting; a default the template injects is removed), "
            "'default' (the template's own), or a system prompt text (default: none)",
        ),
    )
    selector: Selector = field(
        default="cosmic",
        metadata=cli_option(
            "--selector",
            SELECTION,
            run_only=True,
            help="cosmic (activations only; default), refusal-score (Arditi et al.: "
            "refusal-token log-odds, for comparison) or refusal-substring (its variant: "
            "substring-judged refusal rate of short generations)",
        ),
    )
    steering: Steering = field(
        default="lce",
        metadata=cli_option(
            "--steering",
            SELECTION,
            run_only=True,
            help="lce: ablation everywhere + addition at the layer; ace: affine concept editing",
        ),
    )
    n_train: int = field(
        default=CPU_DEFAULTS["n_train"],
        metadata=cli_option(
            "--n-train",
            SIZES,
            parse=positive_int,
            help="train prompts per class (default %(default)s; paper 180)",
        ),
    )
    n_val: int = field(
        default=CPU_DEFAULTS["n_val"],
        metadata=cli_option(
            "--n-val",
            SIZES,
            parse=positive_int,
            help="validation prompts per class (default %(default)s; paper 100)",
        ),
    )
    n_test: int = field(
        default=CPU_DEFAULTS["n_test"],
        metadata=cli_option(
            "--n-test",
            SIZES,
            parse=positive_int,
            help="test prompts per class (default %(default)s)",
        ),
    )
    max_new_tokens: int = field(
        default=48,
        metadata=cli_option(
            "--max-new-tokens",
            SIZES,
            parse=positive_int,
            help="tokens generated per test prompt (default %(default)s)",
        ),
    )
    batch_size: int = field(
        default=32,
        metadata=cli_option(
            "--batch-size",
            SIZES,
            parse=positive_int,
            help="prompts per forward (default %(default)s)",
        ),
    )
    seed: int = field(
        default=0,
        metadata=cli_option("--seed", SIZES, parse=int, help="split seed (default %(default)s)"),
    )
    # Free-form (cuda:N): checked when the model is loaded.
    device: str = field(
        default="auto",
        metadata=cli_option(
            "--device", RUNTIME, help="auto, cpu, cuda, cuda:N (default %(default)s)"
        ),
    )
    dtype: Dtype = field(
        default="auto",
        metadata=cli_option("--dtype", RUNTIME, help="auto = bfloat16 on GPU, float32 on CPU"),
    )
    trust_remote_code: bool = field(
        default=False,
        metadata=cli_option(
            "--trust-remote-code", RUNTIME, switch=True, help="allow model code from the hub"
        ),
    )
    layers_path: str | None = field(
        default=None,
        metadata=cli_option(
            "--layers-path",
            RUNTIME,
            help="dotted path of the decoder block list, e.g. model.layers",
        ),
    )
    attention_path: str | None = field(
        default=None,
        metadata=cli_option(
            "--attention-path",
            RUNTIME,
            help="attention sub-module name inside a block, e.g. self_attn",
        ),
    )
    mlp_path: str | None = field(
        default=None,
        metadata=cli_option(
            "--mlp-path", RUNTIME, help="MLP sub-module name inside a block, e.g. mlp"
        ),
    )
    l_low_fraction: float = field(
        default=0.1,
        metadata=cli_option(
            "--l-low-fraction",
            SELECTION,
            parse=finite_number,
            help="fraction of layers used as evaluation layers (default %(default)s)",
        ),
    )
    l_low_second_half: bool = field(
        default=False,
        metadata=cli_option(
            "--l-low-second-half",
            SELECTION,
            switch=True,
            help="take evaluation layers from the second half only (weakly aligned models)",
        ),
    )
    l_low_layers: list[int] | None = field(
        default=None,
        metadata=cli_option(
            "--l-low-layers",
            SELECTION,
            parse=layer_list,
            help="explicit evaluation layers, e.g. 12,14",
        ),
    )
    aggregation: Aggregation = field(
        default="mean",
        metadata=cli_option(
            "--aggregation",
            SELECTION,
            help="combine L_low layers by mean (reference code) or concat (paper text)",
        ),
    )
    prune_layer_fraction: float = field(
        default=0.2,
        metadata=cli_option(
            "--prune-layer-fraction",
            SELECTION,
            parse=finite_number,
            help="drop candidates in this last fraction of layers (default %(default)s)",
        ),
    )
    # COSMIC drops candidates below it; set by two-stage weak alignment, not an option.
    min_layer: int = 0
    kl_threshold: float = field(
        default=0.1,
        metadata=cli_option(
            "--kl-threshold",
            SELECTION,
            parse=finite_number,
            help="drop candidates whose KL on harmless prompts exceeds this (default %(default)s)",
        ),
    )
    induce_threshold: float = field(
        default=0.0,
        metadata=cli_option(
            "--induce-threshold",
            SELECTION,
            parse=finite_number,
            help="output-based selectors: drop candidates whose mean refusal log-odds under "
            "addition is below this; refusal-substring compares its refusal rate's log-odds "
            "(default %(default)s, i.e. rate 0.5)",
        ),
    )
    median_peak_filter: bool = field(
        default=True,
        metadata=cli_option(
            "--no-median-peak-filter",
            SELECTION,
            switch=False,
            help="disable the median-peak filter for position -1",
        ),
    )
    judge: Judge = field(
        default="substring",
        metadata=cli_option(
            "--judge",
            EVALUATION,
            help="judge of the headline rates; every judge is always reported "
            "(default %(default)s)",
        ),
    )
    refusal_phrases: str | None = field(
        default=None,
        metadata=cli_option(
            "--refusal-phrases",
            EVALUATION,
            metavar="FILE",
            help="substring judge phrases, one per line (default: the papers' list)",
        ),
    )
    judge_model: str | None = field(
        default=None,
        metadata=cli_option(
            "--judge-model",
            EVALUATION,
            metavar="PATH",
            help="a local judge model (directory, embedded name or hub id); adds its verdicts",
        ),
    )
    judge_model_kind: JudgeModelKind = field(
        default="yes-no",
        metadata=cli_option(
            "--judge-model-kind",
            EVALUATION,
            help="yes-no: 'is this a refusal?' for any instruct model; guard: Llama-Guard-style "
            "safe/unsafe (harmful prompts only)",
        ),
    )
    over_refusal: str | None = field(
        default=None,
        metadata=cli_option(
            "--over-refusal",
            EVALUATION,
            metavar="FILE",
            help="safe prompts that sound dangerous (default: built-in set of 100)",
        ),
    )
    # None: as many as n_test; 0 skips the over-refusal evaluation.
    n_over_refusal: int | None = field(
        default=None,
        metadata=cli_option(
            "--n-over-refusal",
            EVALUATION,
            parse=non_negative_int,
            help="over-refusal prompts evaluated; 0 skips (default: --n-test)",
        ),
    )
    # COSMIC's adversarial complete refusal (SPEC §5): val (condition A: the system prompt on the
    # validation prompts) | train+val (condition B: also on the train prompts, so the candidates
    # change too). Test prompts are always evaluated without it.
    adversarial_prompt: AdversarialCondition = field(
        default="none",
        metadata=cli_option(
            "--adversarial-prompt",
            HARD_CASES,
            help="put an adversarial system prompt that makes the model refuse everything on the "
            "validation prompts (val: condition A) or the train and validation prompts (train+val: "
            "condition B); test prompts are evaluated without it (default %(default)s)",
        ),
    )
    adversarial_text: str = field(
        default=ADVERSARIAL_SYSTEM_PROMPT,
        metadata=cli_option(
            "--adversarial-text",
            HARD_CASES,
            metavar="TEXT",
            help="the adversarial system prompt (default: the COSMIC paper's)",
        ),
    )
    # Weakly aligned models (SPEC §5), with the ACE addition sweep over `alphas`.
    weak_alignment: WeakAlignmentMode = field(
        default="none",
        metadata=cli_option(
            "--weak-alignment",
            HARD_CASES,
            run_only=True,
            help="weakly aligned model: two-stage (ACE α=0 first, then select in the second "
            "half and sweep ACE addition) or direct (sweep on the model as it is)",
        ),
    )
    alphas: list[float] = field(
        default_factory=lambda: [1.0, 2.0, 3.0],
        metadata=cli_option(
            "--alphas",
            HARD_CASES,
            parse=number_list,
            run_only=True,
            help="ACE addition strengths of the --weak-alignment sweep (default 1,2,3)",
        ),
    )
    # COSMIC pick stability: re-select on this many bootstrap resamples of the train prompts.
    stability: int = field(
        default=0,
        metadata=cli_option(
            "--stability",
            SELECTION,
            parse=non_negative_int,
            metavar="N",
            run_only=True,
            help="COSMIC only: re-select on N bootstrap resamples of the train prompts and report "
            "how often each candidate wins (default 0: off; each resample costs one selection)",
        ),
    )
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any], source: str = "config") -> RunConfig:
        """The inverse of :meth:`as_dict` (missing keys keep their defaults); not validated."""
        return config_from_dict(values, source)


# --- the generated command line's view of the fields ---------------------------------------------


@dataclass(frozen=True)
class OptionSpec:
    """A field's option with what argparse needs beyond :class:`CliOption`."""

    name: str  # the field, and argparse's dest
    option: CliOption
    default: Any
    choices: tuple[str, ...] | None


def _field_default(item: Field[Any]) -> Any:
    if item.default_factory is not MISSING:
        return item.default_factory()
    return item.default


@cache
def _hints() -> dict[str, Any]:
    return get_type_hints(RunConfig)


def option_specs() -> list[OptionSpec]:
    """Every field that is a command-line option, in field order."""
    specs = []
    for item in fields(RunConfig):
        option = item.metadata.get(_OPTION)
        if option is None:
            continue
        hint = _hints()[item.name]
        choices = get_args(hint) if get_origin(hint) is Literal else None
        specs.append(OptionSpec(item.name, option, _field_default(item), choices))
    return specs


# --- configuration files -------------------------------------------------------------------------


def read_config_file(path: str | Path) -> dict[str, Any]:
    """Settings from a TOML or JSON file, keyed by field name (``n_train``, not ``--n-train``).
    A run directory's ``config.json`` is such a file; ``{"config": {...}, ...}`` (a record that
    wraps the settings) is accepted too and only its ``config`` is read."""
    file = Path(path).expanduser()
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise RefusalkitError(f"config file not found: {file}") from None
    except (OSError, UnicodeDecodeError) as error:
        raise RefusalkitError(f"cannot read config file {file}: {error}") from None
    # TOML by suffix; anything else that looks like JSON is read as JSON, the rest as TOML.
    as_json = file.suffix.lower() == ".json" or (
        file.suffix.lower() != ".toml" and text.lstrip().startswith("{")
    )
    try:
        data = json.loads(text) if as_json else tomllib.loads(text)
    except json.JSONDecodeError as error:
        raise RefusalkitError(f"config file {file}: invalid JSON ({error})") from None
    except tomllib.TOMLDecodeError as error:
        raise RefusalkitError(f"config file {file}: invalid TOML ({error})") from None
    if not isinstance(data, dict):
        raise RefusalkitError(f"config file {file}: expected a table of settings")
    wrapped = data.get("config")
    return dict(wrapped) if isinstance(wrapped, dict) else data


def config_from_dict(values: Mapping[str, Any], source: str = "config") -> RunConfig:
    """A :class:`RunConfig` from field names and plain values (JSON/TOML types), each checked
    against its field's type; an unknown key is an error that names it. ``source`` names where
    the values came from in messages. Not validated: call :func:`validate`."""
    names = {item.name for item in fields(RunConfig)}
    for key in values:
        if key not in names:
            close = difflib.get_close_matches(str(key).replace("-", "_"), sorted(names), n=1)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            raise RefusalkitError(f"{source}: unknown setting '{key}'{hint}")
    settings = {key: _coerce(key, _hints()[key], value, source) for key, value in values.items()}
    return RunConfig(**settings)


def _coerce(key: str, hint: Any, value: Any, source: str) -> Any:
    converted = _convert(hint, value)
    if converted is _WRONG:
        raise RefusalkitError(f"{source}: '{key}' must be {_describe(hint)} (got {value!r})")
    return converted


_WRONG = object()  # _convert's "this value is not of that type"


def _convert(hint: Any, value: Any) -> Any:
    """``value`` as ``hint``'s type (an int is a float too), or ``_WRONG``."""
    origin = get_origin(hint)
    if origin in (Union, types.UnionType):
        if value is None and type(None) in get_args(hint):
            return None
        results = [_convert(arm, value) for arm in get_args(hint) if arm is not type(None)]
        return next((result for result in results if result is not _WRONG), _WRONG)
    if origin is Literal:  # membership is validate()'s, with its own message
        return value if isinstance(value, str) else _WRONG
    if origin is list:
        if not isinstance(value, list):
            return _WRONG
        items = [_convert(get_args(hint)[0], item) for item in value]
        return _WRONG if any(item is _WRONG for item in items) else items
    if origin is dict:
        return dict(value) if isinstance(value, dict) else _WRONG
    if hint is bool:
        return value if isinstance(value, bool) else _WRONG
    if hint is int:
        return value if isinstance(value, int) and not isinstance(value, bool) else _WRONG
    if hint is float:
        number = isinstance(value, int | float) and not isinstance(value, bool)
        return float(value) if number else _WRONG
    if hint is str:
        return value if isinstance(value, str) else _WRONG
    return value  # Any


def _describe(hint: Any) -> str:
    origin = get_origin(hint)
    if origin in (Union, types.UnionType):
        return " or ".join(
            "null" if arm is type(None) else _describe(arm) for arm in get_args(hint)
        )
    if origin is Literal:
        return "one of " + ", ".join(get_args(hint))
    if origin is list:
        return f"a list of {_describe(get_args(hint)[0]).split(' ', 1)[1]}s"
    if origin is dict:
        return "a table"
    words = {bool: "a boolean", int: "an integer", float: "a number", str: "a string"}
    return words.get(hint, "a value")


# --- validation: the one place a configuration is checked -----------------------------------------


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
) -> None:
    """COSMIC's settings; shared with :class:`refusalkit.selection.cosmic.CosmicSettings`."""
    check_mode("steering", steering, STEERINGS)
    check_mode("aggregation", aggregation, AGGREGATIONS)
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
    )
    check_mode("selector", config.selector, SELECTORS)
    check_mode("judge", config.judge, JUDGES)
    if config.judge == "model" and not config.judge_model:
        raise RefusalkitError("--judge model needs --judge-model PATH (a local instruct model)")
    check_mode("judge model kind", config.judge_model_kind, JUDGE_MODEL_KINDS)
    check_mode("dtype", config.dtype, DTYPE_NAMES)
    SystemPrompt.parse(config.system_prompt)
    _check_hard_cases(config)
