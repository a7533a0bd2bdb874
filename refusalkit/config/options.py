"""How a :class:`~refusalkit.config.RunConfig` field appears on the command line: the value
parsers of its options, the option groups of ``run --help`` and the metadata each field carries.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from dataclasses import Field, dataclass
from typing import Any

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


def name_list(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


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
DATA, SIZES, SELECTION, HARD_CASES, EVALUATION, RUNTIME, HARMFULNESS, GEOMETRY = (
    "model and data",
    "sizes (per class)",
    "selection",
    "hard cases (SPEC §5)",
    "evaluation",
    "runtime",
    "harmfulness and Latent Guard (SPEC §8)",
    "refusal geometry (SPEC §9)",
)
OPTION_GROUPS = (DATA, SIZES, SELECTION, HARD_CASES, EVALUATION, RUNTIME, HARMFULNESS, GEOMETRY)
# The groups each command shows: `run` and `compare` select and steer; `harmfulness` and
# `guard fit` read the model's harmfulness judgement and select nothing.
COMMAND_GROUPS = {
    "run": (DATA, SIZES, SELECTION, HARD_CASES, EVALUATION, RUNTIME),
    "compare": (DATA, SIZES, SELECTION, HARD_CASES, EVALUATION, RUNTIME),
    "harmfulness": (DATA, SIZES, EVALUATION, RUNTIME, HARMFULNESS),
    "guard fit": (DATA, SIZES, RUNTIME, HARMFULNESS),
    "geometry": (DATA, SIZES, SELECTION, EVALUATION, RUNTIME, GEOMETRY),
}
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


def field_option(item: Field[Any]) -> CliOption | None:
    """The command-line option of a dataclass field, or None when it is not an option."""
    option: CliOption | None = item.metadata.get(_OPTION)
    return option


@dataclass(frozen=True)
class OptionSpec:
    """A field's option with what argparse needs beyond :class:`CliOption`."""

    name: str  # the field, and argparse's dest
    option: CliOption
    default: Any
    choices: tuple[str, ...] | None
