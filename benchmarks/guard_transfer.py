"""Does a Latent Guard fitted on the built-in prompts transfer to prompts written in another style?

Fits on the built-in train prompts (128 + 128), calibrates τ on the built-in validation prompts
(64 + 64), and measures every guard setting (reading × layer range × raw/centred × length kept or
removed × τ = 0 or calibrated) and the logistic probe on the same reading, on the built-in
validation and test prompts and on the two other-style sets in ``benchmarks/prompt_sets`` (terse,
polite): balanced accuracy, and each class's accuracy. ``--extra-harmful NAME=FILE`` (repeatable)
adds a harmful-only prompt file from the user's hands (a standard benchmark), reported as the share
flagged harmful. Activations are read once; the settings are pure arithmetic on them. Prints a
Markdown table; ``--out FILE`` also writes it as JSON.

    python benchmarks/guard_transfer.py --out benchmarks/results/guard_transfer.json \
        --extra-harmful harmbench=harmbench_behaviors.txt
"""

from __future__ import annotations

import argparse
import json
from itertools import product
from pathlib import Path

import torch

import refusalkit as rk
from refusalkit.config.modes import GUARD_LENGTHS, GUARD_READINGS
from refusalkit.harmfulness import (
    LatentGuard,
    PromptFeatures,
    balanced_accuracy,
    calibrate_threshold,
    fit_probe,
    parse_layer_range,
    probe_features,
    read_features,
)
from refusalkit.prompts.datasets import load_prompts, split_prompts

SETS = Path(__file__).parent / "prompt_sets"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path)
    parser.add_argument("--extra-harmful", action="append", default=[], metavar="NAME=FILE")
    args = parser.parse_args()
    model = rk.load_model("qwen2.5-coder-0.5b-instruct")
    chat = rk.chat_format(model, "none")

    def read(prompts, label) -> PromptFeatures:
        return read_features(model, chat, prompts, 32, label)

    splits = {
        label: split_prompts(rk.builtin_prompts(label)[0], 128, 64, 64, seed=0, label=label)
        for label in ("harmful", "harmless")
    }
    train = {k: read(v.train, f"{k} train") for k, v in splits.items()}
    val = {k: read(v.val, f"{k} val") for k, v in splits.items()}
    tests = {"built-in": {k: read(v.test, f"{k} test") for k, v in splits.items()}}
    for style in ("terse", "polite"):
        tests[style] = {
            k: read(load_prompts(SETS / style / f"{k}.jsonl")[0], f"{style} {k}")
            for k in ("harmful", "harmless")
        }
    extra = {}
    for item in args.extra_harmful:
        name, _, path = item.partition("=")
        extra[name] = read(load_prompts(Path(path))[0], f"{name} (harmful)")
    rows = []
    for reading, layer_range in product(GUARD_READINGS, ("all", "second-half")):
        layers = parse_layer_range(layer_range, model.n_layers)
        for centred, length in product((False, True), GUARD_LENGTHS):
            guard = LatentGuard.from_features(
                train["harmful"], train["harmless"],
                layers=layers, centred=centred, reading=reading, remove_length=length == "removed",
            )  # fmt: skip
            calibrated = calibrate_threshold(
                guard.scores_from_features(val["harmful"]),
                guard.scores_from_features(val["harmless"]),
            )
            for rule, tau in (("zero", 0.0), ("calibrated", calibrated.tau)):
                row = {"reading": reading, "layers": layer_range, "centred": centred,
                       "length": length, "tau": rule}  # fmt: skip
                for name, data in {"val": val, **tests}.items():
                    harmful = guard.scores_from_features(data["harmful"]) >= tau
                    harmless = guard.scores_from_features(data["harmless"]) < tau
                    row[name] = 0.5 * float(harmful.double().mean() + harmless.double().mean())
                    row[f"{name}:harmful"] = float(harmful.double().mean())
                    row[f"{name}:harmless"] = float(harmless.double().mean())
                for name, data in extra.items():
                    flagged = guard.scores_from_features(data) >= tau
                    row[f"{name}:harmful"] = float(flagged.double().mean())
                rows.append(row)

        def features(
            data: PromptFeatures, reading: str = reading, layers: tuple[int, ...] = layers
        ) -> torch.Tensor:
            return probe_features(data.reading(reading), layers)

        probe = fit_probe(
            features(train["harmful"]), features(train["harmless"]),
            features(val["harmful"]), features(val["harmless"]),
        )  # fmt: skip
        row = {"reading": reading, "layers": layer_range, "centred": None, "length": "kept",
               "tau": "logistic probe"}  # fmt: skip
        for name, data in {"val": val, **tests}.items():
            row[name] = balanced_accuracy(
                probe.logits(features(data["harmful"])),
                probe.logits(features(data["harmless"])),
                0.0,
            )
        for name, data in extra.items():
            row[f"{name}:harmful"] = float((probe.logits(features(data)) >= 0).double().mean())
        rows.append(row)
    columns = ["val", *tests, *(f"{name}:harmful" for name in extra)]
    print(f"| reading | layers | cosines | length | τ | {' | '.join(columns)} |")
    print("|---" * (5 + len(columns)) + "|")
    for row in rows:
        kind = "–" if row["centred"] is None else ("centred" if row["centred"] else "raw")
        cells = " | ".join(f"{row[c]:.3f}" for c in columns)
        print(f"| {row['reading']} | {row['layers']} | {kind} | {row['length']} | {row['tau']} | "
              f"{cells} |")  # fmt: skip
    if args.out:
        args.out.write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    torch.set_grad_enabled(False)
    raise SystemExit(main())
