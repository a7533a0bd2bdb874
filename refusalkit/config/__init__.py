"""The full configuration of a run: every setting in one dataclass, saved with the run.

Each mode is a ``Literal`` type (:mod:`~refusalkit.config.modes`), each setting carries its
command-line metadata (flag, help text, value parser; choices come from the ``Literal``:
:mod:`~refusalkit.config.options`), so :mod:`refusalkit.cli` generates its parser from
:class:`RunConfig` (:mod:`~refusalkit.config.run_config`) instead of mapping options by hand, and
:func:`validate` (:mod:`~refusalkit.config.validation`) is the one place that checks a
configuration — whether it came from the command line, a TOML/JSON file
(:mod:`~refusalkit.config.files`; a run directory's ``config.json`` included) or Python.
"""

from refusalkit.config.files import read_config_file
from refusalkit.config.modes import (
    ADVERSARIAL_CONDITIONS,
    AGGREGATIONS,
    CPU_DEFAULTS,
    DTYPE_NAMES,
    JUDGE_MODEL_KINDS,
    JUDGES,
    L_LOW_CONVENTIONS,
    MAX_ABS_ALPHA,
    PAPER_SIZES,
    SELECTORS,
    STEERINGS,
    WEAK_ALIGNMENT_MODES,
    AdversarialCondition,
    Aggregation,
    Dtype,
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
    HARD_CASES,
    OPTION_GROUPS,
    RUNTIME,
    SELECTION,
    SIZES,
    CliOption,
    OptionSpec,
    cli_option,
    finite_number,
    layer_list,
    non_negative_int,
    number_list,
    positive_int,
)
from refusalkit.config.run_config import RunConfig, config_from_dict, option_specs
from refusalkit.config.validation import (
    check_cosmic,
    check_mode,
    check_numbers,
    template_kwargs,
    validate,
    writer_pair,
)

__all__ = [
    "ADVERSARIAL_CONDITIONS",
    "AGGREGATIONS",
    "CPU_DEFAULTS",
    "DATA",
    "DTYPE_NAMES",
    "EVALUATION",
    "HARD_CASES",
    "JUDGES",
    "JUDGE_MODEL_KINDS",
    "L_LOW_CONVENTIONS",
    "MAX_ABS_ALPHA",
    "OPTION_GROUPS",
    "PAPER_SIZES",
    "RUNTIME",
    "SELECTION",
    "SELECTORS",
    "SIZES",
    "STEERINGS",
    "WEAK_ALIGNMENT_MODES",
    "AdversarialCondition",
    "Aggregation",
    "CliOption",
    "Dtype",
    "Judge",
    "JudgeModelKind",
    "LLowConvention",
    "OptionSpec",
    "RunConfig",
    "Selector",
    "Steering",
    "WeakAlignmentMode",
    "check_cosmic",
    "check_mode",
    "check_numbers",
    "cli_option",
    "config_from_dict",
    "finite_number",
    "layer_list",
    "non_negative_int",
    "number_list",
    "option_specs",
    "positive_int",
    "read_config_file",
    "template_kwargs",
    "validate",
    "writer_pair",
]
