"""The settings of a run: :class:`RunConfig`, one field per setting with its command-line
metadata, and the conversions of its fields to command-line options and from plain values."""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from dataclasses import MISSING, Field, asdict, dataclass, field, fields
from functools import cache
from typing import Any, Literal, get_args, get_origin, get_type_hints

from refusalkit.config.files import coerce_setting
from refusalkit.config.modes import (
    CPU_DEFAULTS,
    DEFAULT_GUARD_CENTRING,
    DEFAULT_GUARD_LAYERS,
    DEFAULT_GUARD_LENGTH,
    DEFAULT_GUARD_READING,
    AdversarialCondition,
    Aggregation,
    Dtype,
    GuardCentring,
    GuardLength,
    GuardReading,
    GuardTau,
    Judge,
    JudgeModelKind,
    LLowConvention,
    Selector,
    Steering,
    WeakAlignmentMode,
)
from refusalkit.config.options import (
    DATA,
    EVALUATION,
    GEOMETRY,
    HARD_CASES,
    HARMFULNESS,
    RUNTIME,
    SELECTION,
    SIZES,
    OptionSpec,
    cli_option,
    field_option,
    finite_number,
    layer_list,
    name_list,
    non_negative_int,
    number_list,
    positive_int,
)
from refusalkit.errors import RefusalkitError
from refusalkit.models.registry import DEFAULT_MODEL, EMBEDDED_MODELS
from refusalkit.prompts.chat import ADVERSARIAL_SYSTEM_PROMPT


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
    filter_prompts: bool = field(
        default=False,
        metadata=cli_option(
            "--filter-prompts",
            DATA,
            switch=True,
            help="SPEC §4's data filter (Arditi et al.): keep the harmful train/val prompts with "
            "refusal score > 0 and the harmless ones < 0; counts in prompt-filter.json",
        ),
    )
    chat_template_kwargs: str | None = field(
        default=None,
        metadata=cli_option(
            "--chat-template-kwargs",
            DATA,
            metavar="JSON",
            help="a JSON object of extra chat-template variables, passed wherever a prompt is "
            "rendered, e.g. '{\"enable_thinking\": false}' for reasoning models",
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
    revision: str | None = field(
        default=None,
        metadata=cli_option(
            "--revision",
            RUNTIME,
            help="hub models: the branch, tag or commit to load (the commit is recorded)",
        ),
    )
    device_map: str | None = field(
        default=None,
        metadata=cli_option(
            "--device-map",
            RUNTIME,
            metavar="MAP",
            help="spread a model over several GPUs, the CPU and disk with accelerate: auto, or "
            'a JSON object of module -> device, e.g. \'{"model.layers.0": 0, "lm_head": "cpu"}\'',
        ),
    )
    max_memory: str | None = field(
        default=None,
        metadata=cli_option(
            "--max-memory",
            RUNTIME,
            metavar="JSON",
            help='with --device-map: memory per device, e.g. \'{"0": "20GiB", "cpu": "60GiB"}\'',
        ),
    )
    offload_folder: str | None = field(
        default=None,
        metadata=cli_option(
            "--offload-folder",
            RUNTIME,
            metavar="DIR",
            help="with --device-map: where weights mapped to disk are kept",
        ),
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
    residual_writers: str | None = field(
        default=None,
        metadata=cli_option(
            "--residual-writers",
            RUNTIME,
            metavar="A,B",
            help="the two sub-modules of a block whose outputs are added to the residual stream "
            "(what directional ablation hooks), e.g. post_attention_layernorm,"
            "post_feedforward_layernorm; default: found by a probe forward and checked",
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
    l_low_convention: LLowConvention = field(
        default="block-input",
        metadata=cli_option(
            "--l-low-convention",
            SELECTION,
            help="where L_low and the COSMIC scores read the residual stream: block-input "
            "(SPEC §0, default) or reference (block outputs, the last one after the final "
            "norm, as the reference code's hidden_states[1:])",
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
    # `refusalkit harmfulness` and `refusalkit guard fit` (SPEC §8).
    guard_layers: str = field(
        default=DEFAULT_GUARD_LAYERS,
        metadata=cli_option(
            "--guard-layers",
            HARMFULNESS,
            metavar="RANGE",
            help="layers the Latent Guard averages over: all (every layer but 0), second-half, "
            "A-B or a list such as 4,8,12 (default %(default)s)",
        ),
    )
    guard_centring: GuardCentring = field(
        default=DEFAULT_GUARD_CENTRING,
        metadata=cli_option(
            "--guard-centring",
            HARMFULNESS,
            help="centred: cosines after subtracting the centroids' midpoint; raw: the paper's "
            "cosines (default %(default)s)",
        ),
    )
    guard_reading: GuardReading = field(
        default=DEFAULT_GUARD_READING,
        metadata=cli_option(
            "--guard-reading",
            HARMFULNESS,
            help="what the Latent Guard reads: instruction_mean (block inputs averaged over the "
            "instruction's tokens) or t_inst (the instruction's last token, the paper's) "
            "(default %(default)s)",
        ),
    )
    guard_length: GuardLength = field(
        default=DEFAULT_GUARD_LENGTH,
        metadata=cli_option(
            "--guard-length",
            HARMFULNESS,
            help="removed: project out, at each layer, the direction along which the guard's "
            "reading moves with the prompt's length within each class, so the guard cannot learn "
            "that one class is longer; kept: read the activations as they are, the paper's "
            "(default %(default)s)",
        ),
    )
    guard_tau: GuardTau = field(
        default="calibrated",
        metadata=cli_option(
            "--guard-tau",
            HARMFULNESS,
            help="the guard's threshold: calibrated on the validation prompts (best balanced "
            "accuracy) or zero, the paper's (default %(default)s)",
        ),
    )
    inversion_layers: list[int] | None = field(
        default=None,
        metadata=cli_option(
            "--inversion-layers",
            HARMFULNESS,
            parse=layer_list,
            help="layers of the reply-inversion test (default: 6 spread over the middle half)",
        ),
    )
    n_inversion: int = field(
        default=32,
        metadata=cli_option(
            "--n-inversion",
            HARMFULNESS,
            parse=positive_int,
            help="harmless test prompts in the reply-inversion test (default %(default)s)",
        ),
    )
    # 3, measured on the default model: at 1 neither direction moves the answer much (at most 9 of
    # 32 "No"s flipped); at 3 the harmfulness direction flips 25-26 of 32 at layers 6-8 where the
    # refusal direction at the same norm flips 8-9 (README, "Harmfulness is not refusal").
    inversion_alpha: float = field(
        default=3.0,
        metadata=cli_option(
            "--inversion-alpha",
            HARMFULNESS,
            parse=finite_number,
            help="steering norm of the reply-inversion test, in units of the harmfulness "
            "direction's norm at the layer (default %(default)s)",
        ),
    )
    cosmic_run: str | None = field(
        default=None,
        metadata=cli_option(
            "--cosmic-run",
            HARMFULNESS,
            metavar="DIR",
            help="a run directory of the same model: its COSMIC direction's cosine with both "
            "directions at every layer is reported too",
        ),
    )
    # `refusalkit geometry` (SPEC §9).
    categories: list[str] | None = field(
        default=None,
        metadata=cli_option(
            "--categories",
            GEOMETRY,
            parse=name_list,
            metavar="A,B,C",
            help="only these harm categories (default: every category of the harmful prompts)",
        ),
    )
    min_per_category: int = field(
        default=8,
        metadata=cli_option(
            "--min-per-category",
            GEOMETRY,
            parse=positive_int,
            help="skip (and name) a category with fewer train prompts (default %(default)s)",
        ),
    )
    position: int | None = field(
        default=None,
        metadata=cli_option(
            "--position",
            GEOMETRY,
            parse=int,
            help="read the directions at this post-instruction position (with --layer; "
            "default: COSMIC's pick, as in run)",
        ),
    )
    layer: int | None = field(
        default=None,
        metadata=cli_option(
            "--layer", GEOMETRY, parse=non_negative_int, help="the layer (with --position)"
        ),
    )
    from_run: str | None = field(
        default=None,
        metadata=cli_option(
            "--from-run",
            GEOMETRY,
            metavar="DIR",
            help="take the position and layer from a run directory's selection.json",
        ),
    )
    subspace_k: int = field(
        default=5,
        metadata=cli_option(
            "--subspace-k",
            GEOMETRY,
            parse=positive_int,
            help="ablate the top 1..K principal directions (default %(default)s)",
        ),
    )
    cone_samples: int = field(
        default=32,
        metadata=cli_option(
            "--cone-samples",
            GEOMETRY,
            parse=non_negative_int,
            help="non-negative combinations of the category directions ablated in the cone "
            "check (default %(default)s; 0 skips it)",
        ),
    )
    judge_tokens: int = field(
        default=24,
        metadata=cli_option(
            "--judge-tokens",
            GEOMETRY,
            parse=positive_int,
            help="tokens generated per prompt for the judged refusal rates of the ablations "
            "(default %(default)s: a refusal shows in its first sentence; 15 conditions are "
            "judged)",
        ),
    )

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any], source: str = "config") -> RunConfig:
        """The inverse of :meth:`as_dict` (missing keys keep their defaults); not validated."""
        return config_from_dict(values, source)


# --- the generated command line's view of the fields ---------------------------------------------


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
        option = field_option(item)
        if option is None:
            continue
        hint = _hints()[item.name]
        choices = get_args(hint) if get_origin(hint) is Literal else None
        specs.append(OptionSpec(item.name, option, _field_default(item), choices))
    return specs


# --- settings from plain values (configuration files, a run's record) ----------------------------


# Settings earlier versions wrote to config.json that no longer exist: an empty one is dropped, so
# a run directory made before still repeats with ``--config <run>/config.json``.
RETIRED_SETTINGS = frozenset({"extra"})


def config_from_dict(values: Mapping[str, Any], source: str = "config") -> RunConfig:
    """A :class:`RunConfig` from field names and plain values (JSON/TOML types), each checked
    against its field's type; an unknown key is an error that names it. ``source`` names where
    the values came from in messages. Not validated: call :func:`validate`."""
    names = {item.name for item in fields(RunConfig)}
    values = {k: v for k, v in values.items() if not (k in RETIRED_SETTINGS and v == {})}
    for key in values:
        if key not in names:
            close = difflib.get_close_matches(str(key).replace("-", "_"), sorted(names), n=1)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            raise RefusalkitError(f"{source}: unknown setting '{key}'{hint}")
    settings = {
        key: coerce_setting(key, _hints()[key], value, source) for key, value in values.items()
    }
    return RunConfig(**settings)
