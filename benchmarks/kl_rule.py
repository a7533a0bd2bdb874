"""Which KL rule keeps the directions that work and drops the ones that damage the model? (issue 12)

For a finished run directory, takes the best candidates by COSMIC score that the layer and zero
filters keep (whatever the KL filter said) and measures, on the run's own prompts:

- ``kl_val``: the selection's KL (harmless validation prompts, first response position, removal);
- ``removal``: mean shift of the refusal log-odds on the harmful *test* prompts under removal;
- ``addition``: the same on the harmless test prompts under addition (α = 1);
- ``ce_increase``: the coherence damage independent of KL — the increase in cross-entropy
  (nats/token) of the model's own clean greedy completions of the harmless test prompts (from the
  run's ``completions.jsonl``) under removal.

Then it applies candidate KL rules and reports, for each, the candidate it would pick (the best
score that passes) with its effects. Everything is teacher-forced (no generation), so a run
directory of the default model takes minutes on two CPU cores.

    python benchmarks/kl_rule.py RUN_DIR [--top 30] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from refusalkit.directions import CandidateSet
from refusalkit.evaluation.scoring import first_position_kl, teacher_forced
from refusalkit.interventions import addition, removal
from refusalkit.io import read_jsonl
from refusalkit.models.loading import load_resolved
from refusalkit.prompts.chat import SystemPrompt, build_chat_format
from refusalkit.prompts.datasets import Prompt
from refusalkit.selection.refusal_score import refusal_tokens

KEPT = ("kept", "selected", "kl", "not_needed", "median_peak")


def _prompts(manifest: dict[str, Any], label: str, split: str) -> list[Prompt]:
    return [Prompt(p["text"], p.get("category")) for p in manifest[label]["splits"][split]]


def _finite(value: Any) -> bool:
    """Scores are stored as JSON, where NaN (unscored) became null."""
    return isinstance(value, int | float) and math.isfinite(value)


def _differences(after: Sequence[float], before: Sequence[float]) -> list[float]:
    return [a - b for a, b in zip(after, before, strict=True)]


def measure(run_dir: Path, top: int) -> dict[str, Any]:
    config = json.loads((run_dir / "config.json").read_text())
    manifest = json.loads((run_dir / "splits.json").read_text())
    selection = json.loads((run_dir / "selection.json").read_text())
    candidates = CandidateSet.load(run_dir / "candidates.safetensors")
    adapter, _ = load_resolved(config["model"], device=config["device"], dtype=config["dtype"])
    chat = build_chat_format(adapter.tokenizer, SystemPrompt.parse(config["system_prompt"]))
    tokens = refusal_tokens(adapter.tokenizer).ids
    harmful_test = _prompts(manifest, "harmful", "test")
    harmless_test = _prompts(manifest, "harmless", "test")
    harmless_val = _prompts(manifest, "harmless", "val")
    rows = read_jsonl(run_dir / "completions.jsonl")
    clean_text = {r["prompt"]: r["completion"] for r in rows
                  if r["set"] == "harmless" and r["condition"] == "baseline"}  # fmt: skip
    responses = [
        adapter.tokenizer(clean_text[p.text], add_special_tokens=False)["input_ids"]
        for p in harmless_test
    ]
    empty = [[] for _ in harmful_test]

    def scores(prompts: Sequence[Prompt], answers: Sequence[Sequence[int]], edit: Any = None):
        return teacher_forced(adapter, chat, prompts, answers, intervention=edit)

    clean_harmful = scores(harmful_test, empty)
    clean_val = scores(harmless_val, [[] for _ in harmless_val])
    clean_harmless = scores(harmless_test, responses)
    steering = selection["steering"]
    ranked = sorted(
        (c for c in selection["candidates"] if c["status"] in KEPT and _finite(c["score"])),
        key=lambda c: -c["score"],
    )[:top]
    measured = []
    for rank, candidate in enumerate(ranked, 1):
        position, layer = candidate["position"], candidate["layer"]
        remove = removal(candidates, steering, position, layer)
        add = addition(candidates, steering, position, layer)
        removed_harmful = scores(harmful_test, empty, remove)
        removed_val = scores(harmless_val, [[] for _ in harmless_val], remove)
        removed_harmless = scores(harmless_test, responses, remove)
        added = scores(harmless_test, [[] for _ in harmless_test], add)
        shift = _differences(removed_harmful.refusal_log_odds(tokens),
                             clean_harmful.refusal_log_odds(tokens))  # fmt: skip
        rise = _differences(added.refusal_log_odds(tokens), clean_harmless.refusal_log_odds(tokens))
        measured.append({
            "rank": rank,
            "position": position,
            "layer": layer,
            "score": candidate["score"],
            "status": candidate["status"],
            "kl_val": float(first_position_kl(clean_val, removed_val).mean()),
            "removal": statistics.fmean(shift),
            "addition": statistics.fmean(rise),
            "ce_increase": removed_harmless.cross_entropy() - clean_harmless.cross_entropy(),
        })  # fmt: skip
        print(json.dumps(measured[-1]), file=sys.stderr, flush=True)
    return {"run_dir": str(run_dir), "steering": steering, "candidates": measured}


Rule = Callable[[dict[str, Any], list[dict[str, Any]]], bool]


def rules() -> dict[str, Rule]:
    """Candidate KL rules: a fixed threshold (the papers' 0.1 and others), and thresholds relative
    to the model's own scale on this prompt set (the median KL of the measured candidates)."""

    def fixed(t: float) -> Rule:
        return lambda c, _all: c["kl_val"] <= t

    def relative(f: float) -> Rule:
        return lambda c, all_: c["kl_val"] <= f * statistics.median(x["kl_val"] for x in all_)

    return {
        "KL ≤ 0.1 (papers)": fixed(0.1),
        "KL ≤ 0.2": fixed(0.2),
        "KL ≤ 0.3": fixed(0.3),
        "KL ≤ median": relative(1.0),
        "KL ≤ 2 × median": relative(2.0),
    }


def report(measured: dict[str, Any]) -> str:
    rows = measured["candidates"]
    lines = [
        f"### {measured['run_dir']}",
        "",
        "| rank | pos/layer | score | status | KL val | removal Δlog-odds | addition Δlog-odds "
        "| ΔCE (nats/token) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {c['rank']} | {c['position']}/{c['layer']} | {c['score']:.4f} | {c['status']} | "
        f"{c['kl_val']:.3f} | {c['removal']:+.2f} | {c['addition']:+.2f} | "
        f"{c['ce_increase']:+.3f} |"
        for c in rows
    ]
    lines += ["", "| rule | pick | removal | addition | ΔCE |", "|---|---|---|---|---|"]
    for name, rule in rules().items():
        pick = next((c for c in rows if c["status"] != "median_peak" and rule(c, rows)), None)
        lines.append(
            f"| {name} | – | – | – | – |"
            if pick is None
            else f"| {name} | {pick['position']}/{pick['layer']} (rank {pick['rank']}) | "
            f"{pick['removal']:+.2f} | {pick['addition']:+.2f} | {pick['ce_increase']:+.3f} |"
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dirs", type=Path, nargs="+")
    parser.add_argument("--top", type=int, default=30)
    parser.add_argument("--json", type=Path, help="also write the measurements here")
    args = parser.parse_args()
    torch.set_grad_enabled(False)
    results = [measure(run_dir, args.top) for run_dir in args.run_dirs]
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    print("\n\n".join(report(r) for r in results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
