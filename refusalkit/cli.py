"""Command line: ``refusalkit run`` (the whole pipeline) and ``refusalkit models``.

A thin layer over :mod:`refusalkit.pipeline`: it parses options into a :class:`RunConfig`, shows
progress, prints a short summary, and turns every :class:`RefusalkitError` into one line on stderr
and exit status 2. Exit status: 0 done; 2 bad input or environment (one line); 3 the run finished
but found no working direction (its verdict, printed last, says why); 130 Ctrl-C; 143 SIGTERM.
"""

from __future__ import annotations

import argparse
import errno
import logging
import math
import signal
import sys
import threading
import time
from pathlib import Path
from types import FrameType
from typing import Any, NoReturn

from refusalkit.config import (
    ADVERSARIAL_CONDITIONS,
    CPU_DEFAULTS,
    PAPER_SIZES,
    WEAK_ALIGNMENT_MODES,
    RunConfig,
)
from refusalkit.errors import RefusalkitError, RunTerminated
from refusalkit.evaluation.metrics import format_block_rate
from refusalkit.evaluation.verdict import EXIT_NO_WORKING_DIRECTION, effects
from refusalkit.models.registry import DEFAULT_MODEL, EMBEDDED_MODELS
from refusalkit.prompts.chat import ADVERSARIAL_SYSTEM_PROMPT


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # One line, no usage dump: say what is wrong and where to look.
        self.exit(2, f"refusalkit: error: {message} (see '{self.prog} --help')\n")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got '{text}'") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected 0 or a positive integer, got '{text}'"
        ) from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected 0 or a positive integer, got {value}")
    return value


def _number(text: str) -> float:
    """A finite number: NaN would silently disable a threshold (``x > nan`` is never true)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got '{text}'") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got '{text}'")
    return value


def _layer_list(text: str) -> list[int]:
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated layer numbers, got '{text}'"
        ) from None


def _number_list(text: str) -> list[float]:
    try:
        values = [_number(part) for part in text.split(",") if part.strip()]
    except (ValueError, argparse.ArgumentTypeError):
        raise argparse.ArgumentTypeError(
            f"expected comma-separated numbers, got '{text}'"
        ) from None
    if not values:
        raise argparse.ArgumentTypeError("expected at least one number")
    return values


def _add_run_options(parser: argparse.ArgumentParser, *, choose_method: bool = True) -> None:
    data = parser.add_argument_group("model and data")
    data.add_argument(
        "--model",
        default=DEFAULT_MODEL,
        help=f"embedded model ({', '.join(EMBEDDED_MODELS)}), local model directory, "
        ".gguf file or hub id (default: %(default)s)",
    )
    data.add_argument(
        "--harmful",
        metavar="FILE",
        help="harmful prompts (.txt/.csv/.json/.jsonl); default: built-in set",
    )
    data.add_argument("--harmless", metavar="FILE", help="harmless prompts; default: built-in set")
    data.add_argument(
        "--column", help="prompt column in --harmful/--harmless files (default: detected)"
    )
    data.add_argument(
        "--system-prompt",
        default="none",
        help="'none' (papers' setting; a default the template injects is removed), "
        "'default' (the template's own), or a system prompt text (default: none)",
    )
    sizes = parser.add_argument_group("sizes (per class)")
    sizes.add_argument(
        "--n-train",
        type=_positive_int,
        default=None,
        help=f"train prompts per class (default {CPU_DEFAULTS['n_train']}; paper 180)",
    )
    sizes.add_argument(
        "--n-val",
        type=_positive_int,
        default=None,
        help=f"validation prompts per class (default {CPU_DEFAULTS['n_val']}; paper 100)",
    )
    sizes.add_argument(
        "--n-test",
        type=_positive_int,
        default=CPU_DEFAULTS["n_test"],
        help="test prompts per class (default %(default)s)",
    )
    sizes.add_argument(
        "--paper", action="store_true", help="the paper's sizes: 180 train and 100 val per class"
    )
    sizes.add_argument(
        "--max-new-tokens",
        type=_positive_int,
        default=48,
        help="tokens generated per test prompt (default %(default)s)",
    )
    sizes.add_argument(
        "--batch-size",
        type=_positive_int,
        default=32,
        help="prompts per forward (default %(default)s)",
    )
    sizes.add_argument("--seed", type=int, default=0, help="split seed (default %(default)s)")
    method = parser.add_argument_group("selection")
    if choose_method:
        method.add_argument(
            "--selector",
            choices=("cosmic", "refusal-score", "refusal-substring"),
            default="cosmic",
            help="cosmic (activations only; default), refusal-score (Arditi et al.: "
            "refusal-token log-odds, for comparison) or refusal-substring (its variant: "
            "substring-judged refusal rate of short generations)",
        )
        method.add_argument(
            "--steering",
            choices=("lce", "ace"),
            default="lce",
            help="lce: ablation everywhere + addition at the layer; ace: affine concept editing",
        )
    method.add_argument(
        "--l-low-fraction",
        type=_number,
        default=0.1,
        help="fraction of layers used as evaluation layers (default %(default)s)",
    )
    method.add_argument(
        "--l-low-second-half",
        action="store_true",
        help="take evaluation layers from the second half only (weakly aligned models)",
    )
    method.add_argument(
        "--l-low-layers", type=_layer_list, help="explicit evaluation layers, e.g. 12,14"
    )
    method.add_argument(
        "--aggregation",
        choices=("mean", "concat"),
        default="mean",
        help="combine L_low layers by mean (reference code) or concat (paper text)",
    )
    method.add_argument(
        "--prune-layer-fraction",
        type=_number,
        default=0.2,
        help="drop candidates in this last fraction of layers (default %(default)s)",
    )
    method.add_argument(
        "--kl-threshold",
        type=_number,
        default=0.1,
        help="drop candidates whose KL on harmless prompts exceeds this (default %(default)s)",
    )
    method.add_argument(
        "--induce-threshold",
        type=_number,
        default=0.0,
        help="output-based selectors: drop candidates whose mean refusal log-odds under addition "
        "is below this; refusal-substring compares its refusal rate's log-odds "
        "(default %(default)s, i.e. rate 0.5)",
    )
    method.add_argument(
        "--no-median-peak-filter",
        action="store_true",
        help="disable the median-peak filter for position -1",
    )
    hard = parser.add_argument_group("hard cases (SPEC §5)")
    hard.add_argument(
        "--adversarial-prompt",
        choices=ADVERSARIAL_CONDITIONS,
        default="none",
        help="put an adversarial system prompt that makes the model refuse everything on the "
        "validation prompts (val: condition A) or the train and validation prompts (train+val: "
        "condition B); test prompts are evaluated without it (default %(default)s)",
    )
    hard.add_argument(
        "--adversarial-text",
        default=ADVERSARIAL_SYSTEM_PROMPT,
        metavar="TEXT",
        help="the adversarial system prompt (default: the COSMIC paper's)",
    )
    if choose_method:
        hard.add_argument(
            "--weak-alignment",
            choices=WEAK_ALIGNMENT_MODES,
            default="none",
            help="weakly aligned model: two-stage (ACE α=0 first, then select in the second "
            "half and sweep ACE addition) or direct (sweep on the model as it is)",
        )
        method.add_argument(
            "--stability",
            type=_non_negative_int,
            default=0,
            metavar="N",
            help="COSMIC only: re-select on N bootstrap resamples of the train prompts and report "
            "how often each candidate wins (default 0: off; each resample costs one selection)",
        )
        hard.add_argument(
            "--alphas",
            type=_number_list,
            default=[1.0, 2.0, 3.0],
            help="ACE addition strengths of the --weak-alignment sweep (default 1,2,3)",
        )
    judging = parser.add_argument_group("evaluation")
    judging.add_argument(
        "--judge",
        choices=("substring", "log-odds", "model"),
        default="substring",
        help="judge of the headline rates; every judge is always reported (default %(default)s)",
    )
    judging.add_argument(
        "--refusal-phrases",
        metavar="FILE",
        help="substring judge phrases, one per line (default: the papers' list)",
    )
    judging.add_argument(
        "--judge-model",
        metavar="PATH",
        help="a local judge model (directory, embedded name or hub id); adds its verdicts",
    )
    judging.add_argument(
        "--judge-model-kind",
        choices=("yes-no", "guard"),
        default="yes-no",
        help="yes-no: 'is this a refusal?' for any instruct model; guard: Llama-Guard-style "
        "safe/unsafe (harmful prompts only)",
    )
    judging.add_argument(
        "--over-refusal",
        metavar="FILE",
        help="safe prompts that sound dangerous (default: built-in set of 100)",
    )
    judging.add_argument(
        "--n-over-refusal",
        type=_non_negative_int,
        help="over-refusal prompts evaluated; 0 skips (default: --n-test)",
    )
    runtime = parser.add_argument_group("runtime")
    runtime.add_argument(
        "--device", default="auto", help="auto, cpu, cuda, cuda:N (default %(default)s)"
    )
    runtime.add_argument(
        "--dtype",
        choices=("auto", "float32", "bfloat16", "float16"),
        default="auto",
        help="auto = bfloat16 on GPU, float32 on CPU",
    )
    runtime.add_argument(
        "--trust-remote-code", action="store_true", help="allow model code from the hub"
    )
    runtime.add_argument(
        "--layers-path", help="dotted path of the decoder block list, e.g. model.layers"
    )
    runtime.add_argument(
        "--attention-path", help="attention sub-module name inside a block, e.g. self_attn"
    )
    runtime.add_argument("--mlp-path", help="MLP sub-module name inside a block, e.g. mlp")
    runtime.add_argument(
        "--out", type=Path, help="run directory (default: refusalkit-runs/<time>-<model>)"
    )
    runtime.add_argument("--force", action="store_true", help="replace an existing run directory")
    runtime.add_argument("--quiet", action="store_true", help="no progress bars")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="refusalkit", description="Find, choose, use and audit refusal directions."
    )
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    run_parser = commands.add_parser(
        "run", help="extract candidates, select with COSMIC, evaluate, report"
    )
    _add_run_options(run_parser)
    compare_parser = commands.add_parser(
        "compare",
        help="COSMIC and refusal-score selection, each with LCE and ACE, on the same candidates",
    )
    _add_run_options(compare_parser, choose_method=False)
    report = commands.add_parser(
        "report", help="(re)write report.html for a run or compare directory"
    )
    report.add_argument("run_dir", type=Path, help="a directory written by run or compare")
    commands.add_parser("models", help="list the embedded models")
    prepare = commands.add_parser("prepare", help="download and convert an embedded model now")
    prepare.add_argument("model", nargs="?", default=DEFAULT_MODEL, choices=sorted(EMBEDDED_MODELS))
    return parser


def config_from_args(args: argparse.Namespace) -> RunConfig:
    n_train = args.n_train or (PAPER_SIZES["n_train"] if args.paper else CPU_DEFAULTS["n_train"])
    n_val = args.n_val or (PAPER_SIZES["n_val"] if args.paper else CPU_DEFAULTS["n_val"])
    return RunConfig(
        model=args.model,
        harmful=args.harmful,
        harmless=args.harmless,
        column=args.column,
        system_prompt=args.system_prompt,
        steering=getattr(args, "steering", "lce"),
        n_train=n_train,
        n_val=n_val,
        n_test=args.n_test,
        max_new_tokens=args.max_new_tokens,
        batch_size=args.batch_size,
        seed=args.seed,
        selector=getattr(args, "selector", "cosmic"),
        device=args.device,
        dtype=args.dtype,
        trust_remote_code=args.trust_remote_code,
        layers_path=args.layers_path,
        attention_path=args.attention_path,
        mlp_path=args.mlp_path,
        l_low_fraction=args.l_low_fraction,
        l_low_second_half=args.l_low_second_half,
        l_low_layers=args.l_low_layers,
        aggregation=args.aggregation,
        prune_layer_fraction=args.prune_layer_fraction,
        kl_threshold=args.kl_threshold,
        median_peak_filter=not args.no_median_peak_filter,
        induce_threshold=args.induce_threshold,
        judge=args.judge,
        refusal_phrases=args.refusal_phrases,
        judge_model=args.judge_model,
        judge_model_kind=args.judge_model_kind,
        over_refusal=args.over_refusal,
        n_over_refusal=args.n_over_refusal,
        adversarial_prompt=args.adversarial_prompt,
        adversarial_text=args.adversarial_text,
        weak_alignment=getattr(args, "weak_alignment", "none"),
        alphas=getattr(args, "alphas", [1.0, 2.0, 3.0]),
        stability=getattr(args, "stability", 0),
    )


def _default_out(model: str) -> Path:
    slug = "".join(c if c.isalnum() or c in ".-" else "-" for c in Path(model).name or model)
    return Path("refusalkit-runs") / f"{time.strftime('%Y%m%d-%H%M%S')}-{slug}"


def _print_summary(summary: dict[str, Any], out: Path) -> None:
    selection, evaluation = summary["selection"], summary["evaluation"]
    lines = [
        f"{selection['method'].replace('cosmic', 'COSMIC')}-{selection['steering'].upper()} "
        "selected position "
        f"{selection['position']}, "
        f"layer {selection['layer']} (score {selection['score']:.4f}, KL {selection['kl']:.4f}; "
        f"{selection['n_kept']} of {selection['n_candidates']} candidates kept by the filters)",
    ]
    for label, verb in (
        ("harmful", "removal"),
        ("harmless", "addition"),
        ("over_refusal", "removal"),
    ):
        if label not in evaluation:
            continue
        block = evaluation[label]
        lines.append(
            f"  {label.replace('_', '-'):12s} refusal: baseline "
            f"{format_block_rate(block, 'baseline_refusal')} -> with {verb} "
            f"{format_block_rate(block, 'intervention_refusal')}"
        )
    warning = selection.get("diagnostics", {}).get("warning")
    if warning:
        lines.append(f"warning: {warning}")
    if "weak_alignment" in summary:
        lines.append(_sweep_summary(summary))
    lines.append(f"run directory: {out}  (summary.json, report.md; {summary['seconds']} s)")
    lines += verdict_lines(summary["verdict"])
    print("\n".join(lines))  # noqa: T201 - the CLI's own output


def verdict_lines(verdict: dict[str, Any]) -> list[str]:
    """The effect verdict, last: what a user must not miss."""
    head = "VERDICT: " + ", ".join(f"{kind} {effect}" for kind, effect in effects(verdict))
    head += "" if verdict["works"] else " — NO WORKING DIRECTION"
    return [head, f"  {verdict['reason']}"]


def _sweep_summary(summary: dict[str, Any]) -> str:
    """The α sweep in a few lines, ending with its verdict (a plain statement when no α steers)."""
    lines = []
    stage1 = summary.get("stage1")
    if stage1:
        harmful = stage1["harmful"]
        lines.append(
            f"stage 1 ({stage1['intervention']}): harmful refusal "
            f"{format_block_rate(harmful, 'baseline_refusal')} -> "
            f"{format_block_rate(harmful, 'intervention_refusal')}"
        )
    for point in summary["alpha_sweep"]:
        lines.append(
            f"  alpha {point['alpha']:g}: harmful refusal {point['harmful_refusal_rate']:.2f} "
            f"({point['harmful_refusal_count']}/{point['harmful_n']}), harmless refusal "
            f"{point['harmless_refusal_rate']:.2f} ({point['harmless_refusal_count']}/"
            f"{point['harmless_n']}), degenerate {point['degenerate_rate']:.2f}"
        )
    lines.append(summary["weak_alignment"]["statement"])
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
    except SystemExit as exit_request:  # --help, or a usage error already printed as one line
        return int(exit_request.code or 0)
    # force: messages go to the stderr of this call (a second call in one process rebinds them).
    logging.basicConfig(level=logging.INFO, format="refusalkit: %(message)s", force=True)
    for noisy in ("transformers", "accelerate", "urllib3", "httpx", "huggingface_hub"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    try:
        if args.command == "models":
            for name, model in EMBEDDED_MODELS.items():
                print(f"{name}{' (default)' if name == DEFAULT_MODEL else ''}: {model.description}")  # noqa: T201
            return 0
        if args.command == "report":
            from refusalkit.report.html import write_html_report

            print(write_html_report(args.run_dir))  # noqa: T201
            return 0
        if args.command == "prepare":
            from refusalkit.models.registry import prepare_embedded

            print(prepare_embedded(args.model))  # noqa: T201
            return 0
        from refusalkit import progress
        from refusalkit.pipeline import compare, run
        from refusalkit.report.markdown import render_comparison

        progress.set_enabled(not args.quiet)
        if args.quiet:
            from transformers.utils import logging as transformers_logging

            transformers_logging.disable_progress_bar()
        config = config_from_args(args)
        out = args.out or _default_out(config.model)
        if args.command == "compare":
            comparison = compare(config, out, force=args.force)
            print(render_comparison(comparison), f"run directory: {out}", sep="\n")  # noqa: T201
            working = comparison["working_methods"]
            print(  # noqa: T201
                "VERDICT: "
                + (
                    f"working directions from {', '.join(working)}"
                    if working
                    else "NO WORKING DIRECTION from any method"
                )
            )
            return 0 if working else EXIT_NO_WORKING_DIRECTION
        summary = run(config, out, force=args.force)
        _print_summary(summary, out)
        return 0 if summary["verdict"]["works"] else EXIT_NO_WORKING_DIRECTION
    except RefusalkitError as error:
        print(f"refusalkit: error: {error}", file=sys.stderr)  # noqa: T201
        return 2
    except OSError as error:  # a full disk, a permission, a path that is a file: the environment
        print(f"refusalkit: error: {_os_error_line(error)}", file=sys.stderr)  # noqa: T201
        return 2
    except KeyboardInterrupt:
        print("refusalkit: interrupted; re-run the same command to resume", file=sys.stderr)  # noqa: T201
        return 130
    except RunTerminated:
        print("refusalkit: terminated; re-run the same command to resume", file=sys.stderr)  # noqa: T201
        return 143


if __name__ == "__main__":
    sys.exit(main())
