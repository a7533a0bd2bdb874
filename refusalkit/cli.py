"""Command line: ``refusalkit run`` (the whole pipeline), ``compare``, ``report``, ``models`` and
``prepare``.

A thin layer over :mod:`refusalkit.workflows`. The ``run``/``compare`` options are generated from
:class:`RunConfig`'s field metadata (flag, help, choices from each mode's ``Literal``), so an
option and its setting cannot drift apart; ``--config FILE`` (TOML or JSON, a run directory's
``config.json`` included) gives the settings' defaults and options given on the command line
override it. Every :class:`RefusalkitError` becomes one line on stderr. Exit status: see
:class:`ExitCode` (0 done; 1 crash, a bug; 2 usage, input or environment error; 3 finished without
a working direction; 130 Ctrl-C; 143 SIGTERM).
"""

from __future__ import annotations

import argparse
import errno
import json
import logging
import signal
import sys
import threading
import time
import traceback
from enum import IntEnum
from pathlib import Path
from types import FrameType
from typing import Any, NoReturn

from refusalkit import __version__
from refusalkit.config import (
    COMMAND_GROUPS,
    OPTION_GROUPS,
    PAPER_SIZES,
    RUNTIME,
    SIZES,
    OptionSpec,
    RunConfig,
    config_from_dict,
    option_specs,
    read_config_file,
    validate,
)
from refusalkit.errors import RefusalkitError, RunTerminated
from refusalkit.evaluation.verdict import EXIT_NO_WORKING_DIRECTION
from refusalkit.models.registry import DEFAULT_MODEL, EMBEDDED_MODELS
from refusalkit.runs.records import RunSummary, RunVerdict, WeakAlignmentRun


class ExitCode(IntEnum):
    """The exit status of ``refusalkit``, one meaning each (README: "Exit codes")."""

    OK = 0
    # An exception refusalkit did not expect: a bug. Its traceback is printed; 1 is also what
    # Python itself exits with when a crash happens before main() can catch it.
    CRASH = 1
    # The user can fix it: a usage error (argparse), a bad setting, input file or environment
    # (RefusalkitError, OSError). One line on stderr, nothing written.
    USAGE = 2
    # The run finished, but no direction works (summary.json's verdict says why).
    NO_WORKING_DIRECTION = EXIT_NO_WORKING_DIRECTION
    INTERRUPTED = 130  # Ctrl-C (128 + SIGINT); the run resumes when re-run
    TERMINATED = 143  # SIGTERM (128 + SIGTERM); the run resumes when re-run


LOG_LEVELS = ("debug", "info", "warning", "error")
# Libraries whose messages are hidden by default: transformers' load warnings are about models we
# convert ourselves, and the HTTP libraries log every request. --log-level shows them again.
_LIBRARY_LOGGERS = ("transformers", "accelerate", "urllib3", "httpx", "huggingface_hub")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # One line, no usage dump: say what is wrong and where to look.
        self.exit(ExitCode.USAGE, f"refusalkit: error: {message} (see '{self.prog} --help')\n")


def _help_text(spec: OptionSpec) -> str:
    """The field's help with its default filled in: argparse's own %(default)s would show
    SUPPRESS, the default every generated option has (so that only options given count)."""
    default = spec.default
    shown = ",".join(f"{v:g}" for v in default) if isinstance(default, list) else str(default)
    return spec.option.help.replace("%(default)s", shown.replace("%", "%%"))


def _add_setting(group: argparse._ArgumentGroup, spec: OptionSpec) -> None:
    option = spec.option
    # SUPPRESS: an option not given leaves no attribute, so a --config file's value is kept.
    settings: dict[str, Any] = {
        "dest": spec.name,
        "default": argparse.SUPPRESS,
        "help": _help_text(spec),
    }
    if option.switch is not None:
        settings["action"] = "store_true" if option.switch else "store_false"
    else:
        settings.update(type=option.parse, choices=spec.choices, metavar=option.metavar)
    group.add_argument(option.flag, **settings)


def _add_run_options(parser: argparse.ArgumentParser, command: str = "run") -> None:
    """The options of ``command`` (``run``, ``compare``, ``harmfulness``, ``guard fit``): one per
    RunConfig field of the command's option groups that carries command-line metadata, plus the
    few that are not settings (sizes preset, output)."""
    shown = COMMAND_GROUPS[command]
    groups = {name: parser.add_argument_group(name) for name in OPTION_GROUPS if name in shown}
    for spec in option_specs():
        if spec.option.group in shown and (command == "run" or not spec.option.run_only):
            _add_setting(groups[spec.option.group], spec)
    groups[SIZES].add_argument(
        "--paper", action="store_true", help="the paper's sizes: 180 train and 100 val per class"
    )
    runtime = groups[RUNTIME]
    runtime.add_argument(
        "--config",
        type=Path,
        metavar="FILE",
        help="settings from a TOML or JSON file (keys are the settings' names, e.g. n_train; a "
        "run directory's config.json repeats that run); options given here override it",
    )
    if command == "guard fit":
        runtime.add_argument("--out", type=Path, required=True, help="the guard directory to write")
    else:
        runtime.add_argument(
            "--out", type=Path, help="run directory (default: refusalkit-runs/<time>-<model>)"
        )
    runtime.add_argument("--force", action="store_true", help="replace an existing run directory")
    runtime.add_argument("--quiet", action="store_true", help="no progress bars")


def _add_log_level(parser: argparse.ArgumentParser, default: str | None) -> None:
    parser.add_argument(
        "--log-level",
        choices=LOG_LEVELS,
        default=default,
        help="show messages of this level and above, the libraries' (transformers' load "
        "warnings) included (default: refusalkit's info, the libraries' errors only)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="refusalkit", description="Find, choose, use and audit refusal directions."
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    _add_log_level(parser, None)
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    run_parser = commands.add_parser(
        "run", help="extract candidates, select with COSMIC, evaluate, report"
    )
    _add_run_options(run_parser)
    compare_parser = commands.add_parser(
        "compare",
        help="COSMIC and refusal-score selection, each with LCE and ACE, on the same candidates",
    )
    _add_run_options(compare_parser, "compare")
    harmfulness = commands.add_parser(
        "harmfulness",
        help="harmfulness vs refusal directions, belief scores, reply inversion, Latent Guard "
        "beside its baselines (SPEC §8)",
    )
    _add_run_options(harmfulness, "harmfulness")
    geometry = commands.add_parser(
        "geometry",
        help="per-category refusal directions: angles, spectrum, cross-category and subspace "
        "ablation, cone check (SPEC §9)",
    )
    _add_run_options(geometry, "geometry")
    export = commands.add_parser(
        "export", help="write a run's direction into the weights of a model directory"
    )
    export.add_argument("run_dir", type=Path, help="a finished run directory")
    export.add_argument("--out", type=Path, required=True, help="the model directory to write")
    export.add_argument(
        "--edit", choices=("ablation", "addition", "ace"), default="ablation",
        help="ablation: weight orthogonalization (default); addition: the bias form of "
        "activation addition at the selected layer; ace: refused (no exact weight form)",
    )  # fmt: skip
    export.add_argument("--alpha", type=float, default=1.0, help="addition strength (default 1)")
    export.add_argument(
        "--dtype", choices=("float32", "bfloat16", "float16"),
        help="dtype of the saved weights (default: as loaded, float32 on CPU)",
    )  # fmt: skip
    export.add_argument("--force", action="store_true", help="replace a non-empty --out")
    export.add_argument("--quiet", action="store_true", help="no progress bars")
    chat = commands.add_parser(
        "chat", help="chat with the model, the run's intervention switchable (/ablate, /add, /off)"
    )
    chat.add_argument("run_dir", type=Path, nargs="?", help="a finished run directory")
    chat.add_argument("--model", help="a model (with --direction) instead of a run directory")
    chat.add_argument("--direction", type=Path, help="a direction file (Direction.save) or run dir")
    chat.add_argument("--prompt", help="print one reply to this prompt and exit")
    chat.add_argument(
        "--intervention", choices=("ablate", "add", "ace", "off"), default="ablate",
        help="the intervention at the start (default ablate)",
    )  # fmt: skip
    chat.add_argument("--alpha", type=float, default=1.0, help="for add and ace (default 1)")
    chat.add_argument("--max-new-tokens", type=int, default=256)
    chat.add_argument("--system-prompt", default=None, help="none, default or a text")
    chat.add_argument("--device", default="auto")
    chat.add_argument("--dtype", default="auto", choices=("auto", "float32", "bfloat16", "float16"))
    guard = commands.add_parser("guard", help="the Latent Guard: fit, classify, evaluate")
    guard_commands = guard.add_subparsers(dest="guard_command", required=True, parser_class=_Parser)
    guard_fit = guard_commands.add_parser(
        "fit", help="fit on the train prompts (tau on the validation prompts) and save"
    )
    _add_run_options(guard_fit, "guard fit")
    guard_classify = guard_commands.add_parser("classify", help="score every prompt of a file")
    guard_classify.add_argument("guard_dir", type=Path, help="a directory written by guard fit")
    guard_classify.add_argument("file", type=Path, help="prompts (txt, csv, json or jsonl)")
    guard_classify.add_argument("--out", type=Path, help="JSONL file (default: stdout)")
    guard_evaluate = guard_commands.add_parser(
        "evaluate", help="accuracy on a harmful and a harmless prompt file"
    )
    guard_evaluate.add_argument("guard_dir", type=Path, help="a directory written by guard fit")
    guard_evaluate.add_argument("--harmful", type=Path, required=True, metavar="FILE")
    guard_evaluate.add_argument("--harmless", type=Path, required=True, metavar="FILE")
    guard_evaluate.add_argument(
        "--out", type=Path, required=True, help="writes guard-evaluation.json"
    )
    for command in (guard_classify, guard_evaluate):
        command.add_argument("--column", help="the prompt column of CSV/JSON files")
        command.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
        command.add_argument(
            "--dtype", choices=("auto", "float32", "bfloat16", "float16"),
            help="default: the dtype the guard was fitted with",
        )  # fmt: skip
        command.add_argument("--batch-size", type=int, default=16)
        command.add_argument("--quiet", action="store_true", help="no progress bars")
    report = commands.add_parser(
        "report", help="(re)write report.html for a run or compare directory"
    )
    report.add_argument("run_dir", type=Path, help="a directory written by run or compare")
    models = commands.add_parser("models", help="list the embedded models")
    prepare = commands.add_parser("prepare", help="download and convert an embedded model now")
    prepare.add_argument("model", nargs="?", default=DEFAULT_MODEL, choices=sorted(EMBEDDED_MODELS))
    for command in (
        run_parser, compare_parser, harmfulness, geometry, export, chat, guard_fit,
        guard_classify, guard_evaluate,
        report, models, prepare,
    ):  # fmt: skip
        # Also after the command (`refusalkit run --log-level debug`); SUPPRESS keeps the value
        # given before it.
        _add_log_level(command, argparse.SUPPRESS)
    return parser


def config_from_args(args: argparse.Namespace) -> RunConfig:
    """The run's settings: the defaults, then the --config file, then --paper's sizes, then every
    option given on the command line. Not validated (see refusalkit.config.validate)."""
    values: dict[str, Any] = read_config_file(args.config) if args.config else {}
    if args.command != "run":
        # compare runs every selector and steering itself (harmfulness and guard select
        # nothing); a run's config.json may name one.
        run_only = {spec.name for spec in option_specs() if spec.option.run_only}
        ignored = sorted(key for key in values if key in run_only)
        values = {key: value for key, value in values.items() if key not in run_only}
        if ignored:
            logging.getLogger(__name__).info(
                "%s chooses no method: ignoring %s from %s",
                args.command,
                ", ".join(ignored),
                args.config,
            )
    if args.paper:
        values.update(PAPER_SIZES)
    # Only the options given are attributes (their argparse default is SUPPRESS).
    values.update(
        {spec.name: getattr(args, spec.name) for spec in option_specs() if spec.name in args}
    )
    source = f"config file {args.config}" if args.config else "settings"
    return config_from_dict(values, source)


def _library_level(level: str | None) -> int:
    """The libraries' level: errors only unless --log-level asks for more (or less)."""
    return logging.getLevelName(level.upper()) if level else logging.ERROR


def _configure_logging(level: str | None) -> None:
    """``level`` None keeps the quiet default: refusalkit's own notes at info, the libraries'
    messages only when they are errors."""
    own = logging.getLevelName((level or "info").upper())
    # force: messages go to the stderr of this call (a second call in one process rebinds them).
    message = "%(name)s: %(levelname)s: %(message)s" if level == "debug" else "%(message)s"
    logging.basicConfig(level=own, format=f"refusalkit: {message}", force=True)
    for name in _LIBRARY_LOGGERS:
        logging.getLogger(name).setLevel(_library_level(level))


def _configure_transformers(level: str | None, quiet: bool) -> None:
    """transformers sets its own logger's level when it is first imported, undoing
    _configure_logging: set it again once it is (the run and compare commands import it)."""
    from transformers.utils import logging as transformers_logging

    transformers_logging.set_verbosity(_library_level(level))
    if quiet:
        transformers_logging.disable_progress_bar()


def _default_out(model: str) -> Path:
    slug = "".join(c if c.isalnum() or c in ".-" else "-" for c in Path(model).name or model)
    return Path("refusalkit-runs") / f"{time.strftime('%Y%m%d-%H%M%S')}-{slug}"


def _print_summary(record: RunSummary, out: Path) -> None:
    selection, evaluation = record.selection, record.evaluation
    lines = [
        f"{selection.method.replace('cosmic', 'COSMIC')}-{selection.steering.upper()} "
        "selected position "
        f"{selection.position}, "
        f"layer {selection.layer} (score {selection.score:.4f}, KL {selection.kl:.4f}; "
        f"{selection.n_kept} of {selection.n_candidates} candidates kept by the filters)",
    ]
    verbs = {"harmful": "removal", "harmless": "addition", "over_refusal": "removal"}
    for label, block in evaluation.sets.items():
        lines.append(
            f"  {label.replace('_', '-'):12s} refusal: baseline "
            f"{block.baseline.describe()} -> with {verbs[label]} "
            f"{block.intervention.describe()}"
        )
    warning = selection.diagnostics.warning if selection.diagnostics else None
    if warning:
        lines.append(f"warning: {warning}")
    if record.weak is not None:
        lines.append(_sweep_summary(record.weak))
    lines.append(f"run directory: {out}  (summary.json, report.md; {record.seconds} s)")
    lines += verdict_lines(record.verdict)
    print("\n".join(lines))  # noqa: T201 - the CLI's own output


def _print_harmfulness(record: dict[str, Any], out: Path) -> None:
    groups = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in record["groups"].items())
    cosines = [c for c in record["cosine_harmfulness_refusal"] if c == c]
    pair = record["guard"]["pairs"]["test"]
    own = record["baselines"]["own-refusal"]["pairs"]["test"]
    print(  # noqa: T201
        f"groups: {groups}\n"
        f"cos(v_harm, v_ref) per layer: {min(cosines):.3f} … {max(cosines):.3f}\n"
        f"Latent Guard on the test prompts: balanced accuracy {pair['balanced_accuracy']:.3f} "
        f"(the model's own refusal: {own['balanced_accuracy']:.3f})\n"
        f"run directory: {out}  (harmfulness.json, report.html, guard/)"
    )


def _chat(args: argparse.Namespace) -> int:
    from refusalkit.api import Direction, load_model
    from refusalkit.config import config_from_dict
    from refusalkit.io import read_json
    from refusalkit.prompts.chat import SystemPrompt, build_chat_format
    from refusalkit.workflows.chat import ChatState, chat_loop, stdin_lines

    _configure_transformers(args.log_level, quiet=True)
    if args.run_dir is not None:
        config = config_from_dict(read_json(args.run_dir / "config.json"), "config.json")
        model_name, system, kwargs = config.model, config.system_prompt, config.chat_template_kwargs
        direction = Direction.load(args.direction or args.run_dir)
    elif args.model and args.direction:
        model_name, system, kwargs = args.model, "none", None
        direction = Direction.load(args.direction)
    else:
        raise RefusalkitError("give a run directory, or --model and --direction")
    adapter = load_model(model_name, device=args.device, dtype=args.dtype)
    template_kwargs = json.loads(kwargs) if kwargs else {}
    chat = build_chat_format(
        adapter.tokenizer, SystemPrompt.parse(args.system_prompt or system), template_kwargs
    )
    state = ChatState(args.intervention, args.alpha)
    if args.prompt is not None:
        state.history.clear()
        chat_loop(adapter, chat, direction, [args.prompt], sys.stdout, state=state,
                  max_new_tokens=args.max_new_tokens)  # fmt: skip
        return ExitCode.OK
    chat_loop(adapter, chat, direction, stdin_lines(), sys.stdout, state=state,
              max_new_tokens=args.max_new_tokens, interactive=True)  # fmt: skip
    return ExitCode.OK


def _export(args: argparse.Namespace) -> int:
    from refusalkit import progress
    from refusalkit.workflows.export import export_run

    progress.set_enabled(not args.quiet)
    _configure_transformers(args.log_level, quiet=args.quiet)
    record = export_run(
        args.run_dir, args.out, edit=args.edit, alpha=args.alpha, dtype=args.dtype, force=args.force
    )
    refusal = record["refusal"]
    print(  # noqa: T201
        f"exported {record['edit']} to {args.out}: max logit difference "
        f"{record['max_logit_difference']:.3g}; completions identical "
        f"{record['completions_identical']}/{record['completions_compared']}; {refusal['set']} "
        f"refusal {refusal['run_baseline_refused']}/{refusal['n']} (original) -> "
        f"{refusal['exported_refused']}/{refusal['n']} (exported)"
    )
    return ExitCode.OK


def _guard_files(args: argparse.Namespace) -> int:
    """``guard classify`` and ``guard evaluate``: a guard directory and prompt files."""
    from refusalkit import progress
    from refusalkit.workflows.guard import classify_file, evaluate_files

    progress.set_enabled(not args.quiet)
    _configure_transformers(args.log_level, quiet=args.quiet)
    options = {"column": args.column, "device": args.device, "dtype": args.dtype,
               "batch_size": args.batch_size}  # fmt: skip
    if args.guard_command == "classify":
        classify_file(args.guard_dir, args.file, args.out, **options)
        return ExitCode.OK
    record = evaluate_files(args.guard_dir, args.harmful, args.harmless, args.out, **options)
    print(  # noqa: T201
        f"balanced accuracy {record['balanced_accuracy']:.3f}: harmful "
        f"{record['harmful']['flagged_harmful']}/{record['harmful']['n']} flagged, harmless "
        f"{record['harmless']['flagged_harmful']}/{record['harmless']['n']} flagged\n"
        f"written: {args.out / 'guard-evaluation.json'}"
    )
    return ExitCode.OK


def verdict_lines(verdict: RunVerdict) -> list[str]:
    """The effect verdict, last: what a user must not miss."""
    head = "VERDICT: " + ", ".join(f"{kind} {effect}" for kind, effect in verdict.effects())
    head += "" if verdict.works else " — NO WORKING DIRECTION"
    return [head, f"  {verdict.reason}"]


def _sweep_summary(weak: WeakAlignmentRun) -> str:
    """The α sweep in a few lines, ending with its verdict (a plain statement when no α steers)."""
    lines = []
    if weak.stage1 is not None:
        stage1 = weak.stage1.sets["harmful"]
        lines.append(
            f"stage 1 ({weak.stage1.intervention}): harmful refusal "
            f"{stage1.baseline.describe()} -> {stage1.intervention.describe()}"
        )
    for point in weak.alpha_sweep:
        harmful, harmless = point.harmful, point.harmless
        lines.append(
            f"  alpha {point.alpha:g}: harmful refusal {harmful.value:.2f} "
            f"({harmful.count}/{harmful.n}), harmless refusal "
            f"{harmless.value:.2f} ({harmless.count}/"
            f"{harmless.n}), degenerate {point.degenerate.value:.2f}"
        )
    lines.append(weak.weak_alignment.statement)
    return "\n".join(lines)


# What to do about an operating-system error the user's environment caused.
_OS_HINTS = {
    errno.ENOSPC: "free some space, then re-run the same command to resume",
    errno.EDQUOT: "free some space, then re-run the same command to resume",
    errno.EACCES: "choose a location you can write to (--out) or fix the permissions",
    errno.EPERM: "choose a location you can write to (--out) or fix the permissions",
    errno.EROFS: "the file system is read-only: choose another --out",
    errno.ENOTDIR: "a part of the path is a file, not a directory",
    errno.ENOENT: "check the path",
}


def _os_error_line(error: OSError) -> str:
    where = f": {error.filename}" if error.filename else ""
    hint = _OS_HINTS.get(error.errno or 0, "check the file system and re-run the same command")
    return f"{error.strerror or error}{where} — {hint}"


def _raise_terminated(signum: int, _frame: FrameType | None) -> None:
    raise RunTerminated(f"terminated by signal {signum}")


def main(argv: list[str] | None = None) -> int:
    if threading.current_thread() is not threading.main_thread():
        return _main(argv)  # signal handlers can only be set in the main thread
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        return _main(argv)
    finally:
        signal.signal(signal.SIGTERM, previous)


def _main(argv: list[str] | None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exit_request:  # --help, --version, or a usage error printed as one line
        return int(exit_request.code or 0)
    _configure_logging(args.log_level)
    try:
        return _dispatch(args)
    except RefusalkitError as error:
        print(f"refusalkit: error: {error}", file=sys.stderr)  # noqa: T201
        return ExitCode.USAGE
    except OSError as error:  # a full disk, a permission, a path that is a file: the environment
        print(f"refusalkit: error: {_os_error_line(error)}", file=sys.stderr)  # noqa: T201
        return ExitCode.USAGE
    except KeyboardInterrupt:
        print("refusalkit: interrupted; re-run the same command to resume", file=sys.stderr)  # noqa: T201
        return ExitCode.INTERRUPTED
    except RunTerminated:
        print("refusalkit: terminated; re-run the same command to resume", file=sys.stderr)  # noqa: T201
        return ExitCode.TERMINATED
    except Exception:  # a bug: keep the traceback for the report, but a status of its own
        traceback.print_exc()
        print(  # noqa: T201
            f"refusalkit {__version__}: internal error (a bug, not your input); please report "
            "it with the traceback above",
            file=sys.stderr,
        )
        return ExitCode.CRASH


def _dispatch(args: argparse.Namespace) -> int:
    if args.command == "models":
        for name, model in EMBEDDED_MODELS.items():
            print(f"{name}{' (default)' if name == DEFAULT_MODEL else ''}: {model.description}")  # noqa: T201
        return ExitCode.OK
    if args.command == "report":
        from refusalkit.report.html import write_html_report

        print(write_html_report(args.run_dir))  # noqa: T201
        return ExitCode.OK
    if args.command == "prepare":
        from refusalkit.models.registry import prepare_embedded

        _configure_transformers(args.log_level, quiet=False)
        print(prepare_embedded(args.model))  # noqa: T201
        return ExitCode.OK
    if args.command == "guard" and args.guard_command != "fit":
        return _guard_files(args)
    if args.command == "export":
        return _export(args)
    if args.command == "chat":
        return _chat(args)
    # Settings are read and checked before the pipeline's heavy imports: a bad file fails at once.
    config = config_from_args(args)
    validate(config)
    from refusalkit import progress
    from refusalkit.report.markdown import render_comparison
    from refusalkit.workflows import compare, run

    progress.set_enabled(not args.quiet)
    _configure_transformers(args.log_level, quiet=args.quiet)
    out = args.out or _default_out(config.model)
    if args.command == "guard":
        from refusalkit.report.harmfulness import guard_settings_text
        from refusalkit.workflows.guard import fit_guard

        guard = fit_guard(config, out, force=args.force)
        print(f"guard written to {out}: {guard_settings_text(guard.describe())}")  # noqa: T201
        return ExitCode.OK
    if args.command == "geometry":
        from refusalkit.workflows.geometry import run_geometry

        record = run_geometry(config, out, force=args.force)
        print(  # noqa: T201
            f"position {record['position']}, layer {record['layer']}: {len(record['categories'])} "
            f"categories, {record['n_components_90']} components explain 90%; clusters "
            + " | ".join(", ".join(g) for g in record["two_clusters"])
            + f"\nrun directory: {out}  (geometry.json, geometry.md, report.html)"
        )
        return ExitCode.OK
    if args.command == "harmfulness":
        from refusalkit.workflows.harmfulness import run_harmfulness

        record = run_harmfulness(config, out, force=args.force)
        _print_harmfulness(record, out)
        return ExitCode.OK
    if args.command == "compare":
        comparison = compare(config, out, force=args.force)
        print(render_comparison(comparison), f"run directory: {out}", sep="\n")  # noqa: T201
        working = comparison.working_methods
        print(  # noqa: T201
            "VERDICT: "
            + (
                f"working directions from {', '.join(working)}"
                if working
                else "NO WORKING DIRECTION from any method"
            )
        )
        return ExitCode.OK if working else ExitCode.NO_WORKING_DIRECTION
    summary = run(config, out, force=args.force)
    _print_summary(summary, out)
    return ExitCode.OK if summary.verdict.works else ExitCode.NO_WORKING_DIRECTION


if __name__ == "__main__":
    sys.exit(main())
