"""Greedy batched generation throughput for evaluation, with and without an intervention.

    .venv/bin/python benchmarks/generation.py [--model NAME] [--n-prompts N] [--batch-size N]
        [--max-new-tokens N] [--interventions ablation,addition,ace] [--device auto]
        [--dtype auto] [--out FILE.json]
    .venv/bin/python benchmarks/generation.py --random-weights --shape qwen2.5-7b --device cuda

It generates greedy completions for the same harmless test prompts with
``refusalkit.evaluation.generation.generate``: once with no intervention, then under each
intervention built from a difference-in-means direction (position -1, middle layer, from a few
train prompts): directional ablation (hooks on every block input and attention/MLP output: the
evaluation's LCE removal), activation addition and ACE at that layer. It reports generated tokens
(up to and including each completion's stop token: ``Completion.token_ids``), seconds, tokens per
second, and each intervention's slowdown relative to the baseline. Completions differ in length
under an intervention, and a batch runs until its longest row ends, so ``decode_steps`` (batch
rows × steps actually run) is reported too: tokens/s per decode step is the fair rate.

``--random-weights --shape`` builds a random Qwen2 model as in ``benchmarks/selection.py``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

REPOSITORY = Path(__file__).resolve().parent.parent
if str(REPOSITORY) not in sys.path:  # runnable as a plain script from any directory
    sys.path.insert(0, str(REPOSITORY))

from benchmarks.selection import EMBEDDED_DEFAULT, SHAPES, random_model, timed  # noqa: E402
from refusalkit.activations import encode_batches  # noqa: E402
from refusalkit.directions import compute_candidates  # noqa: E402
from refusalkit.evaluation.generation import Completion, generate  # noqa: E402
from refusalkit.interventions import (  # noqa: E402
    ActivationAddition,
    AffineEdit,
    DirectionalAblation,
    Intervention,
)
from refusalkit.models.adapter import ModelAdapter  # noqa: E402
from refusalkit.models.loading import load_resolved  # noqa: E402
from refusalkit.progress import set_enabled  # noqa: E402
from refusalkit.prompts.chat import ChatFormat, build_chat_format  # noqa: E402
from refusalkit.prompts.datasets import Prompt, builtin_prompts, split_prompts  # noqa: E402

INTERVENTIONS = ("ablation", "addition", "ace")


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=EMBEDDED_DEFAULT)
    parser.add_argument("--n-prompts", type=int, default=16)
    parser.add_argument("--n-train", type=int, default=8, help="per class, for the direction")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--interventions", default=",".join(INTERVENTIONS))
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--random-weights", action="store_true")
    parser.add_argument("--shape", default="qwen2.5-7b", choices=sorted(SHAPES))
    parser.add_argument("--tokenizer", default=None, help="tokenizer directory (random weights)")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    args.interventions = [s.strip() for s in args.interventions.split(",") if s.strip()]
    if set(args.interventions) - set(INTERVENTIONS):
        parser.error(f"--interventions takes any of {', '.join(INTERVENTIONS)}")
    return args


def interventions(
    adapter: ModelAdapter, chat: ChatFormat, train: dict[str, list[Prompt]], names: Sequence[str]
) -> dict[str, Intervention]:
    """The named interventions, from the difference-in-means direction at position -1 and the
    middle layer."""
    batches = {k: encode_batches(chat, v, 32, adapter.device) for k, v in train.items()}
    candidates = compute_candidates(adapter, batches["harmful"], batches["harmless"], 1)
    layer = adapter.n_layers // 2
    direction, reference = candidates.direction(-1, layer), candidates.reference(-1, layer)
    built: dict[str, Intervention] = {
        "ablation": DirectionalAblation(direction),
        "addition": ActivationAddition(direction, layer, 1.0),
        "ace": AffineEdit(direction, reference, layer, alpha=1.0),
    }
    return {name: built[name] for name in names}


def measure(
    adapter: ModelAdapter,
    chat: ChatFormat,
    prompts: Sequence[Prompt],
    intervention: Intervention | None,
    args: argparse.Namespace,
) -> dict[str, Any]:
    completions, seconds = timed(
        lambda: generate(
            adapter,
            chat,
            prompts,
            intervention=intervention,
            max_new_tokens=args.max_new_tokens,
            batch_size=args.batch_size,
        )
    )
    tokens = sum(len(c.token_ids) for c in completions)
    steps = decode_steps(completions, args.batch_size, args.max_new_tokens)
    return {
        "seconds": round(seconds, 3),
        "tokens": tokens,
        "tokens_per_second": round(tokens / seconds, 2),
        "decode_steps": steps,
        "decode_steps_per_second": round(steps / seconds, 2),
    }


def decode_steps(completions: Sequence[Completion], batch_size: int, max_new: int) -> int:
    """Batch rows × generation steps run: a batch runs until its longest completion ends. The
    batches are length-sorted inside ``generate``; this counts them in prompt order, an upper
    bound when lengths differ little, exact when every completion runs to ``max_new``."""
    total = 0
    for start in range(0, len(completions), batch_size):
        rows = completions[start : start + batch_size]
        total += len(rows) * min(max_new, max(len(c.token_ids) for c in rows))
    return total


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse(argv)
    set_enabled(not args.quiet)
    torch.manual_seed(args.seed)
    if args.random_weights:
        adapter, description = random_model(args)
    else:
        adapter, resolved = load_resolved(args.model, device=args.device, dtype=args.dtype)
        description = {"name": args.model, "path": resolved.path, "dtype": str(adapter.dtype)}
    description.update(n_layers=adapter.n_layers, device=str(adapter.device))
    chat = build_chat_format(adapter.tokenizer)
    train, test = {}, []
    for label in ("harmful", "harmless"):
        prompts, _ = builtin_prompts(label)
        splits = split_prompts(prompts, args.n_train, 1, args.n_prompts, args.seed, label)
        train[label] = splits.train
        test = splits.test  # harmless test prompts (the last label)
    built = interventions(adapter, chat, train, args.interventions)
    # Untimed warm-up, so thread pools and allocators are warm for the baseline too.
    generate(adapter, chat, test[: args.batch_size], max_new_tokens=2, batch_size=args.batch_size)
    baseline = measure(adapter, chat, test, None, args)
    rows: dict[str, Any] = {"baseline": baseline}
    for name, intervention in built.items():
        row = measure(adapter, chat, test, intervention, args)
        row["slowdown_per_decode_step"] = round(
            baseline["decode_steps_per_second"] / row["decode_steps_per_second"], 3
        )
        rows[name] = row
    report = {
        "benchmark": "generation",
        "model": description,
        "config": {
            "n_prompts": args.n_prompts, "batch_size": args.batch_size,
            "max_new_tokens": args.max_new_tokens, "seed": args.seed,
            "intervention_layer": adapter.n_layers // 2,
            "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
        },
        "results": rows,
    }  # fmt: skip
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    return report


if __name__ == "__main__":
    main()
