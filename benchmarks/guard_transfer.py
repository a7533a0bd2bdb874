"""Does a Latent Guard fitted on the built-in prompts transfer to prompts written in another style?

Fits on the built-in train prompts (128 + 128), calibrates τ on the built-in validation prompts
(64 + 64), and measures every guard setting (layer range × raw/centred × τ = 0 or calibrated)
and the logistic probe on the built-in test prompts and on the two other-style sets in
``benchmarks/prompt_sets`` (terse, polite). Activations are read once; the settings are pure
arithmetic on them. Prints a Markdown table; ``--out FILE`` also writes it as JSON.

    python benchmarks/guard_transfer.py --out benchmarks/results/guard_transfer.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

import refusalkit as rk
from refusalkit.harmfulness import (
    LatentGuard,
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
    args = parser.parse_args()
    model = rk.load_model("qwen2.5-coder-0.5b-instruct")
    chat = rk.chat_format(model, "none")

    def inst(prompts, label):
        return read_features(model, chat, prompts, 32, label).inst

    splits = {
        label: split_prompts(rk.builtin_prompts(label)[0], 128, 64, 64, seed=0, label=label)
        for label in ("harmful", "harmless")
    }
    train = {k: inst(v.train, f"{k} train") for k, v in splits.items()}
    val = {k: inst(v.val, f"{k} val") for k, v in splits.items()}
    tests = {"built-in": {k: inst(v.test, f"{k} test") for k, v in splits.items()}}
    for style in ("terse", "polite"):
        tests[style] = {
            k: inst(load_prompts(SETS / style / f"{k}.jsonl")[0], f"{style} {k}")
            for k in ("harmful", "harmless")
        }
    rows = []
    for layer_range in ("all", "second-half"):
        layers = parse_layer_range(layer_range, model.n_layers)
        for centred in (False, True):
            guard = LatentGuard.from_activations(
                train["harmful"], train["harmless"], layers=layers, centred=centred
            )
            calibrated = calibrate_threshold(
                guard.scores_from_activations(val["harmful"]),
                guard.scores_from_activations(val["harmless"]),
            ).tau
            for rule, tau in (("zero", 0.0), ("calibrated", calibrated)):
                row = {"layers": layer_range, "centred": centred, "tau": rule}
                for name, data in tests.items():
                    row[name] = balanced_accuracy(
                        guard.scores_from_activations(data["harmful"]),
                        guard.scores_from_activations(data["harmless"]),
                        tau,
                    )
                rows.append(row)
        probe = fit_probe(
            probe_features(train["harmful"], layers), probe_features(train["harmless"], layers),
            probe_features(val["harmful"], layers), probe_features(val["harmless"], layers),
        )  # fmt: skip
        row = {"layers": layer_range, "centred": None, "tau": "logistic probe"}
        for name, data in tests.items():
            row[name] = balanced_accuracy(
                probe.logits(probe_features(data["harmful"], layers)),
                probe.logits(probe_features(data["harmless"], layers)),
                0.0,
            )
        rows.append(row)
    print("| layers | cosines | τ | built-in test | terse | polite |")
    print("|---|---|---|---|---|---|")
    for row in rows:
        kind = "–" if row["centred"] is None else ("centred" if row["centred"] else "raw")
        print(
            f"| {row['layers']} | {kind} | {row['tau']} | {row['built-in']:.3f} | "
            f"{row['terse']:.3f} | {row['polite']:.3f} |"
        )
    if args.out:
        args.out.write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    torch.set_grad_enabled(False)
    raise SystemExit(main())
